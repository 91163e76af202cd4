"""Configuration: read once, validated, every error naming its key.

Each section of ``config.toml`` is a frozen dataclass below. A field's ``doc`` metadata is its
documentation (``radnode config reference`` prints it) and an optional ``check`` validates the
value. Unknown keys, wrong types and bad values raise :class:`ConfigError` with the dotted key.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from node.errors import NodeError
from node.routing.rules import RuleError, compile_condition
from node.toml_table import read_toml
from node.uids import is_valid_uid

log = logging.getLogger(__name__)

class ConfigError(NodeError, ValueError):
    """A configuration problem; the message starts with the offending key."""


def _doc(text: str, check: typing.Callable[[Any], str | None] | None = None) -> dict[str, Any]:
    return {"doc": text, "check": check}


def _ae_title(value: str) -> str | None:
    if not value or len(value) > 16 or not value.isascii() or "\\" in value:
        return "an AE title is 1 to 16 ASCII characters without backslash"
    if value != value.strip():
        return "an AE title has no leading or trailing spaces"
    return None


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "a port is between 1 and 65535"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _between(low: int, high: int) -> typing.Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


def _at_least(minimum: int) -> typing.Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}"

    return check


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LatePolicy(StrEnum):
    """What an instance arriving after its series completed does."""

    RERUN = "rerun"
    IGNORE = "ignore"


class RouteOn(StrEnum):
    SERIES = "series"
    STUDY = "study"


class GraphOptimization(StrEnum):
    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


class SegType(StrEnum):
    BINARY = "binary"
    LABELMAP = "labelmap"


class DestinationKind(StrEnum):
    DICOM = "dicom"
    STOW = "stow"
    CALLER = "caller"


def _ae_titles(values: list[str]) -> str | None:
    for value in values:
        problem = _ae_title(value)
        if problem:
            return f"{value!r}: {problem}"
    return None


def _networks(values: list[str]) -> str | None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not an IP address or network (e.g. 10.0.0.0/8)"
    return None


def _uid_root(value: str) -> str | None:
    return None if is_valid_uid(value + "1") else "must be a UID prefix such as '2.25.'"


@dataclass(frozen=True)
class NodeConfig:
    ae_title: str = field(
        default="RADNODE", metadata=_doc("AE title the node answers to.", _ae_title)
    )
    host: str = field(
        default="127.0.0.1",
        metadata=_doc("Address the DICOM listener binds to; 0.0.0.0 listens on all interfaces."),
    )
    port: int = field(default=11112, metadata=_doc("TCP port of the DICOM listener.", _port))
    max_associations: int = field(
        default=16, metadata=_doc("Most concurrent DICOM associations accepted.", _positive)
    )
    data_dir: str = field(
        default="var",
        metadata=_doc(
            "Folder for the spool and job store; relative paths are relative to the config file."
        ),
    )
    log_level: LogLevel = field(
        default=LogLevel.INFO,
        metadata=_doc("Log level."),
    )
    log_format: LogFormat = field(
        default=LogFormat.TEXT,
        metadata=_doc(
            "Log line format: 'text' for people, 'json' for one JSON object per line (for log "
            "collectors). Both carry the job id and series UID of the job a line is about.",
        ),
    )


@dataclass(frozen=True)
class StorageConfig:
    fsync: bool = field(
        default=True,
        metadata=_doc(
            "fsync each received instance before answering Success. Turn off only on storage "
            "that is durable without it (battery-backed cache)."
        ),
    )
    min_free_mb: int = field(
        default=1024,
        metadata=_doc(
            "Refuse new instances (status 0xA700) while the spool has less free space than this.",
            _not_negative,
        ),
    )
    max_inflated_mb: int = field(
        default=256,
        metadata=_doc(
            "Largest size, in MB, a deflated dataset (Deflated Explicit VR Little Endian) may "
            "inflate to; a larger one is refused with status 0xC000. Deflated objects are rare "
            "and small (reports, key objects); images come compressed by their own codecs. "
            "Inflated once, 1 MB at a time, into a scratch file under the spool.",
            _positive,
        ),
    )
    inflate_budget_mb: int = field(
        default=1024,
        metadata=_doc(
            "Inflated bytes, in MB, that all associations together may hold in scratch files "
            "at once; a deflated dataset that would pass it is refused with status 0xA700 "
            "(out of resources; a later retry may succeed). At least max_inflated_mb.",
            _positive,
        ),
    )


@dataclass(frozen=True)
class NetworkConfig:
    acse_timeout: float = field(
        default=30.0, metadata=_doc("Seconds to wait for association messages.", _positive)
    )
    dimse_timeout: float = field(
        default=60.0, metadata=_doc("Seconds to wait for DIMSE messages.", _positive)
    )
    network_timeout: float = field(
        default=60.0,
        metadata=_doc("Seconds an idle or stuck peer may hold an association.", _positive),
    )
    max_pdu_size: int = field(
        default=0,
        metadata=_doc(
            "Largest PDU the node receives, in bytes; 0 means no limit (fewest round trips).",
            _not_negative,
        ),
    )
    max_pending_connections: int = field(
        default=32,
        metadata=_doc(
            "Connections not yet associated (TLS handshake, association request awaited or "
            "read), in all; one more is answered with A-ASSOCIATE-RJ (transient, local limit) "
            "and closed at once.", _positive),
    )
    max_pending_per_address: int = field(
        default=4,
        metadata=_doc("Connections not yet associated from one source address; one more is "
                      "refused like the above.", _positive),
    )
    busy_idle_timeout: float = field(
        default=5.0,
        metadata=_doc(
            "While node.max_associations is reached, the association idle longest between "
            "messages, if idle this many seconds, is aborted to admit a new one; while "
            "max_pending_connections is reached, the oldest connection that has not completed "
            "its association request in this many seconds is dropped for a new one.",
            _positive),
    )
    max_associate_request: int = field(
        default=65536,
        metadata=_doc(
            "Largest A-ASSOCIATE-RQ read, in bytes (128 contexts with 3 transfer syntaxes each "
            "take about 16 KB); a larger one is rejected (permanent, local limit) unread.",
            _at_least(4096)),
    )


@dataclass(frozen=True)
class AccessConfig:
    calling_ae_titles: list[str] = field(
        default_factory=list,
        metadata=_doc(
            "Calling AE titles allowed to associate; empty allows every AE title (with a warning).",
            _ae_titles,
        ),
    )
    addresses: list[str] = field(
        default_factory=list,
        metadata=_doc(
            "Source addresses or networks (CIDR) allowed to associate; empty allows every address.",
            _networks,
        ),
    )
    check_called_ae_title: bool = field(
        default=True,
        metadata=_doc("Reject associations whose called AE title is not node.ae_title."),
    )


@dataclass(frozen=True)
class TLSConfig:
    enabled: bool = field(default=False, metadata=_doc("Speak DICOM TLS on the listener port."))
    certificate: str = field(default="", metadata=_doc("Server certificate file (PEM)."))
    private_key: str = field(default="", metadata=_doc("Server private key file (PEM)."))
    ca_certificates: str = field(
        default="", metadata=_doc("CA certificates (PEM) that client certificates must chain to.")
    )
    verify_client: bool = field(
        default=False, metadata=_doc("Require a client certificate signed by ca_certificates.")
    )


@dataclass(frozen=True)
class CompletionConfig:
    series_idle_seconds: float = field(
        default=60.0,
        metadata=_doc("A series is complete after this many seconds without a new instance.",
                      _positive),
    )
    study_idle_seconds: float = field(
        default=120.0,
        metadata=_doc(
            "A study is complete when all its series are complete and it has been idle this long.",
            _positive,
        ),
    )
    max_wait_seconds: float = field(
        default=5400.0,
        metadata=_doc(
            "Force completion this many seconds after the first instance, even if still busy.",
            _positive,
        ),
    )
    late_instance_policy: LatePolicy = field(
        default=LatePolicy.RERUN,
        metadata=_doc(
            "What a late instance (after completion) does: 'rerun' re-opens the series and runs "
            "its models again when it completes; 'ignore' stores it and runs nothing.",
        ),
    )
    check_interval_seconds: float = field(
        default=1.0, metadata=_doc("How often completion is checked.", _positive)
    )


@dataclass(frozen=True)
class RouteConfig:
    name: str = field(default="", metadata=_doc("Name of the rule, shown by route --explain."))
    models: list[str] = field(
        default_factory=list, metadata=_doc("Model names each matching series is sent to.")
    )
    match: dict[str, Any] = field(
        default_factory=dict,
        metadata=_doc(
            "Condition over DICOM attributes (see README, Routing); an empty table matches all."
        ),
    )
    on: RouteOn = field(
        default=RouteOn.SERIES,
        metadata=_doc(
            "When the rule is evaluated: when the 'series' completes, or when its 'study' does.",
        ),
    )


@dataclass(frozen=True)
class OutputConfig:
    uid_root: str = field(
        default="2.25.",
        metadata=_doc("Prefix of the UIDs the node derives for its output objects.", _uid_root),
    )


def _providers(values: list[str]) -> str | None:
    known = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider")
    for value in values:
        if value not in known:
            return f"{value!r} is not one of {', '.join(known)}"
    return None


@dataclass(frozen=True)
class RuntimeConfig:
    providers: list[str] = field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        metadata=_doc(
            "ONNX Runtime providers in order of preference; those not installed are skipped and "
            "CPUExecutionProvider is always the last resort.",
            _providers,
        ),
    )
    cuda_device_id: int = field(
        default=0, metadata=_doc("GPU used by the CUDA and TensorRT providers.", _not_negative)
    )
    intra_op_threads: int = field(
        default=0,
        metadata=_doc("Threads inside one operator on the CPU; 0 lets ONNX Runtime decide.",
                      _not_negative),
    )
    inter_op_threads: int = field(
        default=0,
        metadata=_doc("Threads across operators; 0 lets ONNX Runtime decide.", _not_negative),
    )
    gpu_mem_limit_gb: float = field(
        default=0.0,
        metadata=_doc("GPU memory arena limit for CUDA in GiB; 0 means no limit.",
                      _not_negative),
    )
    tensorrt_fp16: bool = field(
        default=False, metadata=_doc("Let TensorRT build fp16 engines.")
    )
    tensorrt_cache_dir: str = field(
        default="",
        metadata=_doc("Folder where TensorRT caches its engines; empty for no cache."),
    )
    graph_optimization: GraphOptimization = field(
        default=GraphOptimization.ALL,
        metadata=_doc("ONNX Runtime graph optimisation level."),
    )
    cpu_memory_arena: bool = field(
        default=False,
        metadata=_doc("Keep ONNX Runtime's CPU memory arena: it holds on to a model's peak "
                      "memory after each run (0.9 GB more for the brain structures)."),
    )


@dataclass(frozen=True)
class WorkersConfig:
    concurrency: int = field(
        default=1, metadata=_doc("Jobs run at the same time.", _positive)
    )
    models_dir: str = field(
        default="models",
        metadata=_doc("Folder of model packages; relative to the config file."),
    )
    max_attempts: int = field(
        default=3,
        metadata=_doc("A job interrupted by a crash is retried this many times in all.",
                      _positive),
    )
    max_voxels: int = field(
        default=2**31,
        metadata=_doc(
            "Largest series a job loads, in voxels (Rows x Columns x slices); checked before "
            "anything is allocated, so a header claiming huge images fails its job instead of "
            "exhausting memory. The loaded volume takes 4 bytes per voxel.", _positive),
    )
    max_grid_voxels: int = field(
        default=2**27,
        metadata=_doc(
            "Largest grid a model may resample a series onto, in voxels (each stage's, and the "
            "model's it runs after); checked before anything is allocated, so a few small "
            "images with a huge pixel spacing fail their job instead of filling memory.",
            _positive),
    )
    job_timeout_s: float = field(
        default=1800.0,
        metadata=_doc(
            "A job still running after this many seconds is stopped and fails with the reason "
            "'time limit of N s exceeded'; its worker takes the next job. 0 turns the limit "
            "off. The default is about 36 times the slowest model job measured on 2 CPU cores.",
            _not_negative),
    )
    max_job_memory_mb: int = field(
        default=0,
        metadata=_doc(
            "Memory budget: when the node process's resident memory (VmRSS, checked 4 times a "
            "second) goes over this many MB, the running job (with several workers, the one "
            "that started last) is stopped and fails with the reason 'memory budget of N MB "
            "exceeded'. 0: three quarters of the machine's memory (or of its cgroup limit).",
            _not_negative),
    )


@dataclass(frozen=True)
class KindResultsConfig:
    """What every output kind's ``[results.<kind>]`` table has (node.results.kinds)."""

    series_number: int = field(
        default=9000, metadata=_doc("Series Number of the kind's series.", _positive)
    )


@dataclass(frozen=True)
class SegResultsConfig(KindResultsConfig):
    series_number: int = field(
        default=9001, metadata=_doc("Series Number of the SEG series the node writes "
                                    "(was `results.series_number_seg`).", _positive)
    )
    type: SegType = field(
        default=SegType.BINARY,
        metadata=_doc(
            "'binary' (every reader) or 'labelmap' (DICOM 2024c Label Map SEG with RLE, for many "
            "labels; fewer readers) (was `results.seg_type`).",
        ),
    )


@dataclass(frozen=True)
class SrResultsConfig(KindResultsConfig):
    series_number: int = field(
        default=9002, metadata=_doc("Series Number of the SR series the node writes "
                                    "(was `results.series_number_sr`).", _positive)
    )


# The flat [results] keys before one sub-table per output kind: still read, and mapped.
DEPRECATED_RESULTS_KEYS = {
    "series_number_seg": ("seg", "series_number"),
    "series_number_sr": ("sr", "series_number"),
    "seg_type": ("seg", "type"),
}


@dataclass(frozen=True)
class ResultsConfig:
    series_description_prefix: str = field(
        default="radnode",
        metadata=_doc("Series descriptions start with this, then the model name, then the "
                      "kind (SEG, SR)."),
    )
    manufacturer: str = field(
        default="radnode", metadata=_doc("Manufacturer written into result objects.")
    )
    institution_name: str = field(
        default="", metadata=_doc("Institution Name written into result objects, if set.")
    )
    sr_templates_dir: str = field(
        default="sr_templates",
        metadata=_doc("Folder of SR templates (sr_templates/README.md); relative to the config "
                      "file."),
    )
    seg: SegResultsConfig = field(
        default_factory=SegResultsConfig,
        metadata=_doc("The DICOM Segmentation (output kind `seg`)."),
    )
    sr: SrResultsConfig = field(
        default_factory=SrResultsConfig,
        metadata=_doc("The TID 1500 Comprehensive 3D SR (output kind `sr`)."),
    )


def _map_deprecated_results_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """``[results]`` with its old flat keys moved to their kind's sub-table (a warning each);
    a key given both ways is an error."""
    results = raw.get("results")
    if not isinstance(results, dict) or not set(results) & set(DEPRECATED_RESULTS_KEYS):
        return raw
    results = dict(results)
    for old, (kind, key) in DEPRECATED_RESULTS_KEYS.items():
        if old not in results:
            continue
        table = results.get(kind, {})
        if not isinstance(table, dict):
            raise ConfigError(f"results.{kind}: must be a table")
        if key in table:
            raise ConfigError(f"results.{old}: set results.{kind}.{key} instead, not both")
        log.warning("config: results.%s is deprecated; write results.%s.%s", old, kind, key)
        results[kind] = {**table, key: results.pop(old)}
    return {**raw, "results": results}


@dataclass(frozen=True)
class SenderConfig:
    calling_ae_title: str = field(
        default="RADNODE", metadata=_doc("AE title the node uses when it sends.", _ae_title)
    )
    max_attempts: int = field(
        default=20,
        metadata=_doc(
            "Sends tried per object (or, while a destination is down, tries of the destination) "
            "before the objects become dead letters; with the default back-off, 20 tries span "
            "about three hours.", _positive),
    )
    initial_backoff_seconds: float = field(
        default=5.0, metadata=_doc("Wait after the first failed send; doubles each time.",
                                   _positive)
    )
    max_backoff_seconds: float = field(
        default=900.0, metadata=_doc("Longest wait between two sends.", _positive)
    )
    timeout_seconds: float = field(
        default=30.0, metadata=_doc("Network timeout for sending.", _positive)
    )


@dataclass(frozen=True)
class DestinationConfig:
    name: str = field(default="", metadata=_doc("Name shown in logs, the CLI and the API."))
    kind: DestinationKind = field(
        default=DestinationKind.DICOM,
        metadata=_doc(
            "'dicom' (C-STORE), 'stow' (DICOMweb STOW-RS) or 'caller' (C-STORE back to the "
            "peer whose AE title sent the study; see [[peers]]).",
        ),
    )
    ae_title: str = field(default="", metadata=_doc("Called AE title (kind 'dicom')."))
    host: str = field(default="", metadata=_doc("Host name or address (kind 'dicom')."))
    port: int = field(default=104, metadata=_doc("Port (kind 'dicom').", _port))
    tls: bool = field(default=False, metadata=_doc("Use DICOM TLS (kind 'dicom'/'caller')."))
    tls_ca_certificates: str = field(
        default="", metadata=_doc("CA certificates (PEM) that the server must chain to.")
    )
    tls_certificate: str = field(default="", metadata=_doc("Client certificate (PEM), if any."))
    tls_private_key: str = field(default="", metadata=_doc("Client private key (PEM), if any."))
    url: str = field(
        default="", metadata=_doc("DICOMweb base URL, e.g. http://pacs:8042/dicom-web (stow).")
    )
    token: str = field(default="", metadata=_doc("Bearer token for STOW-RS, if any."))
    username: str = field(default="", metadata=_doc("Basic-auth user for STOW-RS, if any."))
    password: str = field(default="", metadata=_doc("Basic-auth password for STOW-RS."))


@dataclass(frozen=True)
class PeerConfig:
    ae_title: str = field(default="", metadata=_doc("AE title of a known sender.", _ae_title))
    host: str = field(default="", metadata=_doc("Where its C-STORE SCP listens."))
    port: int = field(default=104, metadata=_doc("Its C-STORE SCP port.", _port))


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = field(
        default=True,
        metadata=_doc("Serve the HTTP interface: dashboard, JSON API, health and metrics."),
    )
    host: str = field(
        default="127.0.0.1",
        metadata=_doc(
            "Address the HTTP interface binds to; keep 127.0.0.1 unless a token is set and the "
            "network is trusted (the interface speaks plain HTTP)."
        ),
    )
    port: int = field(default=11180, metadata=_doc("TCP port of the HTTP interface.", _port))
    token: str = field(
        default="",
        metadata=_doc(
            "Bearer token every request must carry (Authorization: Bearer TOKEN), except "
            "/health and /ready; empty means no token."
        ),
    )
    timeout_seconds: float = field(
        default=20.0,
        metadata=_doc(
            "Seconds a client has to send a whole request (line, headers, body) and to take the "
            "answer; a slow or half-open one gets 408, an idle keep-alive connection is closed.",
            _positive,
        ),
    )
    threads: int = field(
        default=8,
        metadata=_doc(
            "Threads that answer HTTP requests (1 to 64); a connection still sending its request "
            "holds none.",
            _between(1, 64),
        ),
    )
    max_connections: int = field(
        default=128,
        metadata=_doc(
            "Most open HTTP connections (1 to 4096); past it the one idle longest is closed to "
            "make room, or a newcomer gets 503 when all are busy.",
            _between(1, 4096),
        ),
    )
    max_body_bytes: int = field(
        default=65536,
        metadata=_doc(
            "Largest request body accepted (no endpoint reads one); a larger Content-Length "
            "gets 413.",
            _not_negative,
        ),
    )


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    completion: CompletionConfig = field(default_factory=CompletionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    results: ResultsConfig = field(default_factory=ResultsConfig)
    sender: SenderConfig = field(default_factory=SenderConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    routes: list[RouteConfig] = field(default_factory=list)
    destinations: list[DestinationConfig] = field(default_factory=list)
    peers: list[PeerConfig] = field(default_factory=list)
    base_dir: Path = field(default=Path("."), metadata={"internal": True})

    def path(self, value: str) -> Path:
        """A configured path, relative to the config file's folder unless absolute."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def data_dir(self) -> Path:
        return self.path(self.node.data_dir)


def load_config(path: str | Path | None) -> Config:
    """Read and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return build_config({}, Path.cwd())
    path = Path(path)
    raw = read_toml(path, ConfigError, str(path), f"config file {path} does not exist")
    return build_config(raw, path.resolve().parent)


def build_config(raw: dict[str, Any], base_dir: Path) -> Config:
    values = _build(Config, _map_deprecated_results_keys(raw), "")
    config = Config(**values, base_dir=base_dir)
    _check_cross_fields(config)
    return config


def _build(cls: type, raw: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if key not in known:
            where = f"{prefix}{key}"
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(known))})")
    out: dict[str, Any] = {}
    for name, f in known.items():
        key = f"{prefix}{name}"
        if name not in raw:
            continue
        out[name] = _convert(hints[name], raw[name], key)
        check = f.metadata.get("check")
        if check is not None:
            problem = check(out[name])
            if problem:
                raise ConfigError(f"{key}: {problem} (got {raw[name]!r})")
    return out


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and is_dataclass(hint):
        return hint(**_build(hint, value, key + "."))
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: must be a list (got {type(value).__name__})")
        (item,) = typing.get_args(hint)
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a table (got {type(value).__name__})")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false (got {value!r})")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer (got {value!r})")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: must be a number (got {value!r})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string (got {value!r})")
        return value
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        choices = [member.value for member in hint]
        if not isinstance(value, str) or value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(choices)} (got {value!r})")
        return hint(value)
    if origin in (typing.Union, types.UnionType):
        return value
    raise ConfigError(f"{key}: unsupported setting type {hint}")


def _check_cross_fields(config: Config) -> None:
    _check_names(config.routes, "routes", "route")
    for i, route in enumerate(config.routes):
        key = f"routes[{i}]"
        if not route.models:
            raise ConfigError(f"{key}.models: a route names at least one model")
        for model in route.models:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", model):
                raise ConfigError(f"{key}.models: {model!r} is not a valid model name")
        try:
            compile_condition(route.match)
        except RuleError as exc:
            raise ConfigError(f"{key}.match{exc.path}: {exc.reason}") from None
    _check_destinations(config)
    tls = config.tls
    if tls.enabled:
        for name in ("certificate", "private_key"):
            value = getattr(tls, name)
            if not value:
                raise ConfigError(f"tls.{name}: required when tls.enabled is true")
            if not config.path(value).is_file():
                raise ConfigError(f"tls.{name}: file {value} does not exist")
        if tls.verify_client and not tls.ca_certificates:
            raise ConfigError("tls.ca_certificates: required when tls.verify_client is true")
    if config.network.max_pending_per_address > config.network.max_pending_connections:
        raise ConfigError("network.max_pending_per_address: must be at most "
                          "network.max_pending_connections")
    if config.storage.inflate_budget_mb < config.storage.max_inflated_mb:
        raise ConfigError("storage.inflate_budget_mb: must be at least storage.max_inflated_mb")
    if config.completion.study_idle_seconds < config.completion.series_idle_seconds:
        raise ConfigError(
            "completion.study_idle_seconds: must be at least completion.series_idle_seconds"
        )


def _check_names(items: Sequence[RouteConfig | DestinationConfig], section: str,
                 what: str) -> None:
    """Every item of a [[section]] list has a name, and no two the same."""
    names: set[str] = set()
    for i, item in enumerate(items):
        key = f"{section}[{i}]"
        if not item.name:
            raise ConfigError(f"{key}.name: every {what} needs a name")
        if item.name in names:
            raise ConfigError(f"{key}.name: duplicate {what} name {item.name!r}")
        names.add(item.name)


def _check_destinations(config: Config) -> None:
    _check_names(config.destinations, "destinations", "destination")
    for i, d in enumerate(config.destinations):
        key = f"destinations[{i}]"
        if d.kind == "dicom":
            problem = _ae_title(d.ae_title)
            if problem:
                raise ConfigError(f"{key}.ae_title: {problem} (got {d.ae_title!r})")
            if not d.host:
                raise ConfigError(f"{key}.host: required for kind 'dicom'")
        if d.kind == "stow" and not d.url.startswith(("http://", "https://")):
            raise ConfigError(f"{key}.url: kind 'stow' needs an http:// or https:// URL")
        if d.kind == "caller" and not config.peers:
            raise ConfigError(f"{key}.kind: 'caller' needs [[peers]] to know where callers listen")
        for name in ("tls_ca_certificates", "tls_certificate", "tls_private_key"):
            value = getattr(d, name)
            if value and not config.path(value).is_file():
                raise ConfigError(f"{key}.{name}: file {value} does not exist")
    seen: set[str] = set()
    for i, peer in enumerate(config.peers):
        if peer.ae_title in seen:
            raise ConfigError(f"peers[{i}].ae_title: duplicate peer {peer.ae_title!r}")
        seen.add(peer.ae_title)
        if not peer.host:
            raise ConfigError(f"peers[{i}].host: required")


def _reference_row(f: Field[Any], hint: Any) -> str:
    """One setting's row: key, type (an enum's choices), default, meaning."""
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    type_name = getattr(hint, "__name__", str(hint))
    if typing.get_origin(hint) is not None:
        type_name = str(hint).replace("typing.", "")
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        type_name = " \\| ".join(f"`{member.value}`" for member in hint)
        default = default.value
    return f"| `{f.name}` | {type_name} | `{default!r}` | {f.metadata.get('doc', '')} |"


def reference() -> str:
    """Markdown reference of every setting, generated from the dataclasses above."""
    lines = ["# Configuration reference", "", "Generated from `node/config.py`.", ""]
    for f in fields(Config):
        if f.metadata.get("internal"):
            continue
        hint = typing.get_type_hints(Config)[f.name]
        cls = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
        header = f"[[{f.name}]]" if typing.get_origin(hint) is list else f"[{f.name}]"
        lines += [f"## `{header}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        sub_hints = typing.get_type_hints(cls)
        tables = [(f"{f.name}.{sf.name}", sub_hints[sf.name], sf.metadata.get("doc", ""))
                  for sf in fields(cls) if is_dataclass(sub_hints[sf.name])]
        for sf in fields(cls):
            if is_dataclass(sub_hints[sf.name]):
                continue  # a sub-table: its own section below
            lines.append(_reference_row(sf, sub_hints[sf.name]))
        lines.append("")
        for name, table, doc in tables:
            lines += [f"### `[{name}]`", "", doc, "", "| key | type | default | meaning |",
                      "|---|---|---|---|"]
            table_hints = typing.get_type_hints(table)
            lines += [_reference_row(tf, table_hints[tf.name]) for tf in fields(table)]
            lines.append("")
    return "\n".join(lines)
