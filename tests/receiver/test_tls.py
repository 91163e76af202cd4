"""DICOM TLS on the listener, with certificates made in the test and DCMTK as the client."""

from __future__ import annotations

import subprocess

import pytest
from support.tls import make_certificates
from support.tools import dcmtk

from node.synthetic import SeriesGeometry, write_series


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    return write_series(tmp_path_factory.mktemp("ct"), SeriesGeometry(rows=64, columns=64,
                                                                      slices=1))[0]


def send(port: int, *tls_args: str, files) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("storescu"), "-v", "-aec", "RADNODE", *tls_args, "127.0.0.1", str(port),
         *map(str, files)], capture_output=True, text=True, timeout=60)


def tls_node(node_factory, certs, verify_client: bool, name: str):
    return node_factory({"tls": {
        "enabled": True, "certificate": str(certs.server_cert),
        "private_key": str(certs.server_key), "ca_certificates": str(certs.ca),
        "verify_client": verify_client}}, name=name)


def test_tls_store_with_trusted_client_certificate(node_factory, certs, instance) -> None:
    node = tls_node(node_factory, certs, True, "verify")
    ok = send(node.port, "+tls", str(certs.client_key), str(certs.client_cert),
              "+cf", str(certs.ca), files=[instance])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert node.store().count_instances() == 1
    assert "with TLS" in node.log()


def test_tls_rejects_clients_without_a_trusted_certificate(node_factory, certs, instance) -> None:
    node = tls_node(node_factory, certs, True, "strict")
    anonymous = send(node.port, "+tla", "+cf", str(certs.ca), files=[instance])
    assert anonymous.returncode != 0
    stranger = send(node.port, "+tls", str(certs.stranger_key), str(certs.stranger_cert),
                    "+cf", str(certs.ca), files=[instance])
    assert stranger.returncode != 0
    plain = send(node.port, files=[instance])
    assert plain.returncode != 0
    assert node.store().count_instances() == 0


def test_tls_without_client_verification_accepts_anonymous(node_factory, certs,
                                                           instance) -> None:
    node = tls_node(node_factory, certs, False, "open")
    ok = send(node.port, "+tla", "+cf", str(certs.ca), files=[instance])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert node.store().count_instances() == 1
