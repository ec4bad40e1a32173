#!/usr/bin/env python3
"""Serve the web example on 127.0.0.1: the page (this folder, and the Node.js example's intervals.mjs),
onnxruntime-web's files from the installed npm package (node_modules/onnxruntime-web/dist, at /ort/), and
one bundle's manifest.json and the files it lists (at /bundle/), read-only. Python's standard library only:
no torchport, no torch.

    python examples/web/serve.py BUNDLE [--host 127.0.0.1] [--port 8000]

It prints the page's address on its first line; --port 0 takes a free port.
"""
from __future__ import annotations

import argparse
import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).resolve().parent
PAGE_FILES = ("index.html", "app.mjs", "bundle.mjs", "encoding.mjs", "style.css")
ORT_DIST = HERE / "node_modules" / "onnxruntime-web" / "dist"
INTERVALS = HERE.parent / "node" / "intervals.mjs"  # prediction intervals, shared with the Node.js example
# Content types the browser insists on: ES modules must be JavaScript, WebAssembly must be application/wasm
# (for streaming compilation).
TYPES = {".html": "text/html; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".json": "application/json", ".wasm": "application/wasm", ".png": "image/png"}


def routes(bundle: Path) -> dict[str, Path]:
    """URL path -> file: the page's files, and the bundle's manifest and the files it lists."""
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    out = {f"/{name}": HERE / name for name in PAGE_FILES}
    out["/"] = HERE / "index.html"
    out["/intervals.mjs"] = INTERVALS
    out["/bundle/manifest.json"] = bundle / "manifest.json"
    out.update({f"/bundle/{name}": bundle / name for name in manifest.get("files", {})})
    return out


def handler(table: dict[str, Path]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "torchport-web-example"

        def find(self) -> Path | None:
            path = unquote(urlsplit(self.path).path)
            if path.startswith("/ort/"):
                name = path[len("/ort/"):]
                candidate = (ORT_DIST / name).resolve()
                return candidate if "/" not in name and candidate.parent == ORT_DIST.resolve() else None
            return table.get(path)

        def answer(self, body: bool) -> None:
            file = self.find()
            if file is None or not file.is_file():
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            data = file.read_bytes()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", TYPES.get(file.suffix, "application/octet-stream"))
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_GET(self) -> None:
            self.answer(True)

        def do_HEAD(self) -> None:
            self.answer(False)

        def log_message(self, format: str, *args) -> None:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")
    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path, help="bundle directory (written by `torchport train`)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 takes a free one)")
    args = p.parse_args(argv)
    if not (ORT_DIST / "ort.wasm.min.mjs").is_file():
        print(f"serve.py: error: {ORT_DIST} is missing: run `npm ci` in {HERE} (make setup does)", file=sys.stderr)
        return 2
    try:
        table = routes(args.bundle)
    except (OSError, ValueError) as e:
        print(f"serve.py: error: {args.bundle} is not a bundle directory with a manifest.json ({e})", file=sys.stderr)
        return 2
    server = ThreadingHTTPServer((args.host, args.port), handler(table))
    print(f"serving {args.bundle} at http://{args.host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
