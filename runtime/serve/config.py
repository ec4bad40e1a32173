"""The settings of one `torchport serve` run, as one record: the command builds it, every worker process
reads it back from JSON (``from_json`` checks each key) and builds its server from it."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from torchport.runtime.errors import InputError
from torchport.runtime.jsonfields import FLAG, INT, NULL, NUMBER, TEXT, items, scalar, values

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
CONTROL_MODES = ("none", "poll", "explicit")

_SCHEMA = {"path": TEXT, "model_name": (str, NULL), "host": TEXT, "port": INT, "grpc_port": (int, NULL),
           "workers": INT, "providers": TEXT, "max_batch_size": INT, "max_queue_delay_us": INT,
           "max_body_bytes": INT, "max_concurrent_requests": INT, "request_timeout_s": NUMBER,
           "model_control_mode": TEXT, "repository_poll_secs": NUMBER, "load_models": (list,),
           "api_key_file": (str, NULL), "tls_cert": (str, NULL), "tls_key": (str, NULL),
           "trusted_keys": (list, NULL), "control_dir": (str, NULL), "allow_failed_parity": FLAG,
           "model_load_timeout_s": NUMBER, "body_timeout_s": NUMBER, "max_header_bytes": INT}


@dataclass(frozen=True)
class ServeConfig:
    """Everything a server process needs. ``path``: a bundle, an .onnx file or a model repository;
    ``trusted_keys``: PEM files of public keys a bundle must be signed by (None: not asked);
    ``control_dir``: where the workers of one server find each other (set by the command when there are
    several); ``allow_failed_parity``: serve bundles whose parity check or self-check failed;
    ``model_load_timeout_s``: how long one version's load may take before it is given up;
    ``body_timeout_s``: how long a request's body may take to arrive; ``max_header_bytes``: the cap on a
    request's line and headers together."""
    path: str
    model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None
    workers: int = 1
    providers: str = "auto"
    max_batch_size: int = 64
    max_queue_delay_us: int = 0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_concurrent_requests: int = 1024
    request_timeout_s: float = 30.0
    model_control_mode: str = "none"
    repository_poll_secs: float = 15.0
    load_models: tuple[str, ...] = ()
    api_key_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    trusted_keys: tuple[str, ...] | None = None
    control_dir: str | None = None
    allow_failed_parity: bool = False
    model_load_timeout_s: float = 60.0
    body_timeout_s: float = 5.0
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES

    def __post_init__(self) -> None:
        checks = [("max_batch_size", self.max_batch_size >= 1), ("workers", self.workers >= 1),
                  ("max_body_bytes", self.max_body_bytes >= 1), ("max_queue_delay_us", self.max_queue_delay_us >= 0),
                  ("max_concurrent_requests", self.max_concurrent_requests >= 1),
                  ("request_timeout_s", 0 < self.request_timeout_s < math.inf),
                  ("repository_poll_secs", 0 < self.repository_poll_secs < math.inf),
                  ("model_load_timeout_s", 0 < self.model_load_timeout_s < math.inf),
                  ("body_timeout_s", 0 < self.body_timeout_s < math.inf),
                  ("max_header_bytes", self.max_header_bytes >= 1024)]
        for name, ok in checks:
            if not ok:
                raise InputError(f"{name} is out of range: {getattr(self, name)!r}", parameter=name)
        if self.model_control_mode not in CONTROL_MODES:
            raise InputError(f"model_control_mode must be one of {', '.join(CONTROL_MODES)}; got "
                             f"{self.model_control_mode!r}", parameter="model_control_mode")
        if self.load_models and self.model_control_mode != "explicit":
            raise InputError("load_models chooses what an explicit-mode server loads at start; in modes none and "
                             "poll every model is loaded", parameter="load_models")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InputError("TLS needs both a certificate and its private key", parameter="tls_cert")
        if self.model_name is not None and (not self.model_name or "/" in self.model_name):
            raise InputError(f"model_name {self.model_name!r} must be a non-empty name without '/'",
                             parameter="model_name")
        if self.grpc_port is not None and self.grpc_port == self.port:
            raise InputError(f"grpc_port and port are both {self.port}; give gRPC a port of its own",
                             parameter="grpc_port")

    def to_json(self) -> dict:
        out = asdict(self)
        out["load_models"] = list(self.load_models)
        out["trusted_keys"] = None if self.trusted_keys is None else list(self.trusted_keys)
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str = "serve settings") -> "ServeConfig":
        v = values(obj, where, _SCHEMA)
        v["load_models"] = items(v["load_models"], f"{where}.load_models", scalar(TEXT))
        if v["trusted_keys"] is not None:
            v["trusted_keys"] = items(v["trusted_keys"], f"{where}.trusted_keys", scalar(TEXT))
        return cls(**v)
