"""Fixtures for the sender tests: a job store, DCMTK storescp peers and certificates."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.sender import StoreSCP

from node.store import JobStore, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = open_store(tmp_path / "data" / "radnode.db")
    yield s
    s.close()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Any]:
    started: list[StoreSCP] = []

    def make(*args: str, aet: str = "PEER", name: str = "scp") -> StoreSCP:
        scp = StoreSCP(tmp_path / name, *args, aet=aet).start()
        started.append(scp)
        return scp

    yield make
    for scp in started:
        scp.stop()


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, made with
    the openssl command line tool."""
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is not installed")
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=radnode test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign")
    for name, cn, ext in (
        ("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                "extendedKeyUsage=serverAuth\n"),
        ("client", "RADNODE", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(ext)
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    # a second CA that signed nothing: a node trusting only it must refuse the server
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key",
        "-out", "other.crt", "-days", "2", "-subj", "/CN=some other CA")
    return {"ca": d / "ca.crt", "other_ca": d / "other.crt",
            "server_cert": d / "server.crt", "server_key": d / "server.key",
            "client_cert": d / "client.crt", "client_key": d / "client.key"}
