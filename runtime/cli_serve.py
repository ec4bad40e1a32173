"""Serve a bundle over HTTP with the Open Inference Protocol (KServe V2 REST, plus Triton's binary tensor
extension), so stock clients such as tritonclient.http work unchanged. Requests that arrive together are
merged into one ONNX Runtime call (dynamic batching). SIGTERM or Ctrl+C stops accepting, finishes the
requests in flight and exits 0. On loading, the bundle's golden cases (rows with their float64 answers,
kept at export) are run on this machine's providers: a model that does not compute here what it computed
at export is refused (exit 1), as is a bundle that failed its parity check, unless --allow-failed-parity.

endpoints:
  GET  /v2/health/live, /v2/health/ready, /v2, /v2/models/NAME, /v2/models/NAME/ready, /metrics
  POST /v2/models/NAME/infer

example:
  torchport serve bundles/seed --port 8000
  curl -s localhost:8000/v2/models/seed/infer -d '{"inputs":[{"name":"features","shape":[1,1],"datatype":"FP32","data":[3.0]}]}'
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import uvicorn  # noqa: F401  (imported first so that a missing 'serve' extra is reported as such)

from torchport.runtime.errors import InputError
from torchport.runtime.options import int_at_least, port
from torchport.runtime.serve.app import CONFIG_ENV, DEFAULT_MAX_BODY_BYTES, build_app
from torchport.runtime.serve.server import bind, run_server


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory (or an .onnx file written by torchport)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=port, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--model-name", help="the model's name in the URLs (default: the bundle directory's name)")
    p.add_argument("--max-batch-size", type=int_at_least(1), default=64,
                   help="most rows merged into one ONNX Runtime call; 1 turns batching off (default: 64)")
    p.add_argument("--max-queue-delay-us", type=int_at_least(0), default=0,
                   help="longest a request waits for others to batch with, in microseconds (uvloop's timer "
                        "rounds it to milliseconds); 0 batches only what arrives together (default: 0)")
    p.add_argument("--workers", type=int_at_least(1), default=1,
                   help="server processes sharing the port, each with its own model and batcher (default: 1)")
    p.add_argument("--max-body-bytes", type=int_at_least(1), default=DEFAULT_MAX_BODY_BYTES,
                   help=f"larger request bodies get 413 (default: {DEFAULT_MAX_BODY_BYTES})")
    p.add_argument("--providers", default="auto",
                   help="auto (CUDA then CPU), cpu, cuda, or ONNX Runtime provider names, comma-separated")
    p.add_argument("--allow-failed-parity", action="store_true",
                   help="serve a bundle whose parity check or self-check failed (for inspection)")


def run(args: argparse.Namespace) -> int:
    settings = {"bundle": str(args.bundle), "model_name": args.model_name, "providers": args.providers,
                "max_batch_size": args.max_batch_size, "max_queue_delay_us": args.max_queue_delay_us,
                "max_body_bytes": args.max_body_bytes, "allow_failed_parity": args.allow_failed_parity}
    if args.model_name is not None and (not args.model_name or "/" in args.model_name):
        raise InputError(f"--model-name {args.model_name!r} must be a non-empty name without '/'")
    app = build_app(**settings)  # fails here, before listening, on a bad bundle
    info = app.info
    sock = bind(args.host, args.port)  # a port in use is a one-line error before anything is announced
    batching = "off" if args.max_batch_size == 1 else \
        f"up to {args.max_batch_size} rows, waiting at most {args.max_queue_delay_us} us"
    print(f"torchport serve: model {info.name!r} ({', '.join(info.feature_names)} -> "
          f"{', '.join(info.target_names)}) on {', '.join(app.providers)}; batching {batching}; "
          f"{args.workers} worker(s)\n  {app.self_check_note}\n"
          f"  POST http://{args.host}:{args.port}/v2/models/{info.name}/infer",
          file=sys.stderr, flush=True)
    if args.workers > 1:
        os.environ[CONFIG_ENV] = json.dumps(settings)
        run_server("torchport.runtime.serve.app:app_from_env", args.host, args.port, args.workers, factory=True,
                   sock=sock)
    else:
        run_server(app, args.host, args.port, sock=sock)
    print("torchport serve: stopped after finishing the requests in flight", file=sys.stderr)
    return 0
