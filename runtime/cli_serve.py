"""Serve bundles with the Open Inference Protocol: REST (KServe V2, with Triton's binary tensor extension) and,
with --grpc-port, gRPC (inference.GRPCInferenceService), so stock clients such as tritonclient.http and
tritonclient.grpc work unchanged. PATH is one bundle (or .onnx file), or a model repository laid out as
Triton lays it out: PATH/NAME/1/, PATH/NAME/2/ ... (each a bundle) or PATH/NAME/ a bundle itself, with an
optional PATH/NAME/config.pbtxt whose version_policy picks the versions served (latest 1 by default).
Every bundle is checked before it is served (sha256 of every file it loads, a passed parity record, its golden
cases run on this machine's providers, and with --trusted-keys a signature); one that does not check is
refused with a log line and what served before keeps serving (--allow-failed-parity serves one whose parity
check or golden cases failed, for inspection). Requests that arrive together are merged into one ONNX Runtime call (dynamic batching).
SIGTERM or Ctrl+C reports the server draining (not ready; gRPC health NOT_SERVING), stops accepting, finishes
the requests in flight and exits 0; SIGHUP reads the repository again in modes poll and explicit.

REST endpoints:
  GET  /v2/health/live, /v2/health/ready                    (never need the API key)
  GET  /v2, /v2/models/NAME[/versions/V], .../ready, .../config, .../stats, /v2/models/stats, /metrics,
       /openapi.json (every GET also answers HEAD)
  POST /v2/models/NAME[/versions/V]/infer
  POST /v2/repository/index, /v2/repository/models/NAME/load, /v2/repository/models/NAME/unload

model control modes:
  none      load every model at start; the repository is not read again
  poll      also look at the repository every --repository-poll-secs: new, changed and removed versions are
            loaded, swapped in and unloaded without dropping a request in flight
  explicit  load only --load-model NAME at start; POST .../load and .../unload (or gRPC) do the rest

not done by the server: no authorisation per model (one key opens every endpoint), no rate limiting per
client (only the limits on requests in flight, body size and request time, for everyone together).

examples:
  torchport serve bundles/seed --port 8000
  torchport serve model_repository --grpc-port 8001 --model-control-mode poll --repository-poll-secs 5
  torchport serve model_repository --host 0.0.0.0 --api-key-file key.txt --tls-cert cert.pem --tls-key key.pem
  curl -s localhost:8000/v2/models/seed/infer -d '{"inputs":[{"name":"features","shape":[1,1],"datatype":"FP32","data":[3.0]}]}'
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import uvicorn  # noqa: F401  (imported first so that a missing 'serve' extra is reported as such)

from torchport.runtime.bundle import MANIFEST, Bundle
from torchport.runtime.errors import BundleError, InputError
from torchport.runtime.files import remove_leftovers
from torchport.runtime.options import int_at_least, port, positive_float
from torchport.runtime.predictor import Predictor
from torchport.runtime.serve.config import CONTROL_MODES, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HEADER_BYTES, \
    ServeConfig
from torchport.runtime.serve.models import check_bundle
from torchport.runtime.serve.security import is_loopback
from torchport.runtime.serve.server import CONFIG_ENV, bind, build, logger, run_server


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, metavar="PATH",
                   help="a bundle directory, an .onnx file written by torchport, or a model repository")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=port, default=8000, help="REST port (default: 8000)")
    p.add_argument("--grpc-port", type=port, help="also serve gRPC on this port (default: no gRPC)")
    p.add_argument("--model-name", help="with a single bundle: its name in the URLs (default: the directory's name)")
    p.add_argument("--model-control-mode", choices=CONTROL_MODES, default="none",
                   help="none (load at start), poll (also follow the repository's changes) or explicit (load and "
                        "unload on request) (default: none)")
    p.add_argument("--repository-poll-secs", type=positive_float, default=15.0, metavar="S",
                   help="with --model-control-mode poll: seconds between looks at the repository (default: 15)")
    p.add_argument("--load-model", action="append", dest="load_models", default=[], metavar="NAME",
                   help="with --model-control-mode explicit: a model to load at start; repeat it for several, "
                        "'*' for all")
    p.add_argument("--max-batch-size", type=int_at_least(1), default=64,
                   help="most rows merged into one ONNX Runtime call; 1 turns batching off (default: 64)")
    p.add_argument("--max-queue-delay-us", type=int_at_least(0), default=0,
                   help="longest a request waits for others to batch with, in microseconds (uvloop's timer "
                        "rounds it to milliseconds); 0 batches only what arrives together (default: 0)")
    p.add_argument("--workers", type=int_at_least(1), default=1,
                   help="server processes sharing the ports, each with its own models and batchers; loads, "
                        "unloads, statistics and /metrics act on all of them (default: 1)")
    p.add_argument("--providers", default="auto",
                   help="auto (CUDA then CPU), cpu, cuda, or ONNX Runtime provider names, comma-separated")
    p.add_argument("--model-load-timeout-s", type=positive_float, default=60.0, metavar="S",
                   help="a model version whose load takes longer is given up and refused with a log line; other "
                        "loads, polls and shutdown never wait for it (default: 60)")
    p.add_argument("--allow-failed-parity", action="store_true",
                   help="serve bundles whose parity check or self-check failed (for inspection)")
    security = p.add_argument_group("security and limits")
    security.add_argument("--api-key-file", type=Path, metavar="FILE",
                          help="require 'Authorization: Bearer TOKEN' (gRPC: the same metadata) on every endpoint "
                               "but /v2/health/*, TOKEN being this file's content (16 printable characters or more)")
    security.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve REST and gRPC over TLS with this "
                                                                      "certificate chain (with --tls-key)")
    security.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    security.add_argument("--trusted-keys", type=Path, action="append", metavar="PEM",
                          help="serve only bundles signed (torchport sign) by a public key in this file, on load "
                               "and on every reload; repeat it for several files")
    security.add_argument("--max-body-bytes", type=int_at_least(1), default=DEFAULT_MAX_BODY_BYTES,
                          help=f"larger requests get 413 / RESOURCE_EXHAUSTED (default: {DEFAULT_MAX_BODY_BYTES})")
    security.add_argument("--max-concurrent-requests", type=int_at_least(1), default=1024, metavar="N",
                          help="inference requests in flight per worker beyond which new ones get 503 with "
                               "Retry-After / UNAVAILABLE (default: 1024)")
    security.add_argument("--body-timeout-s", type=positive_float, default=5.0, metavar="S",
                          help="a request body not all arrived in this time gets 408 and its connection is closed; "
                               "a request counts against --max-concurrent-requests only once its body is in "
                               "(default: 5)")
    security.add_argument("--max-header-bytes", type=int_at_least(1024), default=DEFAULT_MAX_HEADER_BYTES,
                          metavar="N", help="a request whose line and headers pass this size gets 431 and its "
                                            f"connection is closed, the rest unread (default: {DEFAULT_MAX_HEADER_BYTES})")
    security.add_argument("--request-timeout-s", type=positive_float, default=30.0, metavar="S",
                          help="an inference request not answered in this time gets 504 / DEADLINE_EXCEEDED "
                               "(default: 30)")


def _config(args: argparse.Namespace) -> ServeConfig:
    def text(path: Path | None) -> str | None:
        return None if path is None else str(path)
    return ServeConfig(
        path=str(args.path), model_name=args.model_name, host=args.host, port=args.port, grpc_port=args.grpc_port,
        workers=args.workers, providers=args.providers, max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us, max_body_bytes=args.max_body_bytes,
        max_concurrent_requests=args.max_concurrent_requests, request_timeout_s=args.request_timeout_s,
        model_control_mode=args.model_control_mode, repository_poll_secs=args.repository_poll_secs,
        load_models=tuple(args.load_models), api_key_file=text(args.api_key_file), tls_cert=text(args.tls_cert),
        tls_key=text(args.tls_key),
        trusted_keys=None if args.trusted_keys is None else tuple(str(k) for k in args.trusted_keys),
        allow_failed_parity=args.allow_failed_parity, model_load_timeout_s=args.model_load_timeout_s,
        body_timeout_s=args.body_timeout_s, max_header_bytes=args.max_header_bytes)


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    path = Path(config.path)
    for done in remove_leftovers(path):
        print(f"torchport serve: note: {done}", file=sys.stderr)
    if not path.exists():
        raise BundleError(f"{path} does not exist; give a bundle directory, an .onnx file or a model repository")
    if args.model_name is not None and not (path.is_file() or (path / "manifest.json").is_file()):
        raise InputError("model_name names a single bundle; in a repository each model is named by its directory",
                         parameter="model_name")
    if (path / MANIFEST).is_file():  # one bundle: why it is refused is the command's error, with its fix
        check_bundle(Bundle.open(path), Predictor(path, providers=args.providers, allow_failed_parity=True),
                     args.allow_failed_parity)
    sock = bind(args.host, args.port)  # a port in use is a one-line error before anything is announced
    if config.grpc_port is not None:
        bind(args.host, config.grpc_port, "grpc_port").close()
    log, held = logger(1), []  # lines of the start are held: a bundle refused at start is one error line

    def hold_or_log(line: str) -> None:
        held.append(line) if held is not None else log(line)

    app, problems = build(config, hold_or_log)  # fails here, on a bad key, certificate or bundle
    registry = app.registry
    if registry.single and problems and config.model_control_mode != "explicit":
        raise BundleError(next(iter(problems.values()))[0])
    for line in held:
        log(line)
    held = None
    if not registry.models and config.model_control_mode == "none":
        found = "no model could be loaded (see the lines above)" if registry.index() else \
            "holds no bundle and no model directory (NAME/1/, NAME/2/, ...)"
        raise BundleError(f"{path}: {found}, so there is nothing to serve")
    if not is_loopback(args.host) and config.api_key_file is None:
        log(f"warning: listening on {args.host} without --api-key-file: anyone who can reach ports "
            f"{args.port}{'' if config.grpc_port is None else f' and {config.grpc_port}'} can call every endpoint")
    scheme = "https" if config.tls_cert else "http"
    batching = "off" if args.max_batch_size == 1 else \
        f"up to {args.max_batch_size} rows, waiting at most {args.max_queue_delay_us} us"
    served = ", ".join(f"{m.name} v{m.version}" for m in registry.served()) or "nothing yet"
    print(f"torchport serve: {served} on {', '.join(sorted({p for m in registry.served() for p in m.predictor.providers})) or '-'}; "
          f"batching {batching}; {args.workers} worker(s); model control mode {config.model_control_mode}\n"
          f"  REST {scheme}://{args.host}:{args.port}/v2"
          + ("" if config.grpc_port is None else f"\n  gRPC {args.host}:{config.grpc_port}"
             + (" (TLS)" if config.tls_cert else "")), file=sys.stderr, flush=True)
    tls = (config.tls_cert, config.tls_key) if config.tls_cert else None
    if args.workers > 1:
        app = registry = None  # the workers load their own models; this process only supervises them
        control_dir = tempfile.mkdtemp(prefix="torchport-serve-")  # mode 0700: only this user reaches the workers
        try:
            os.environ[CONFIG_ENV] = json.dumps({**config.to_json(), "control_dir": control_dir})
            run_server("torchport.runtime.serve.server:app_from_env", args.host, args.port, args.workers,
                       factory=True, sock=sock, tls=tls, max_header_bytes=config.max_header_bytes)
        finally:
            shutil.rmtree(control_dir, ignore_errors=True)
    else:
        run_server(app, args.host, args.port, sock=sock, tls=tls, max_header_bytes=config.max_header_bytes)
    print("torchport serve: stopped after finishing the requests in flight", file=sys.stderr)
    return 0
