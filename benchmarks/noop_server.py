"""The floor for serve_load: a no-op V2 infer endpoint on exactly torchport serve's HTTP stack (the same
uvicorn settings, through torchport.runtime.serve.server.run_server). It reads the request body and
answers a fixed response: no JSON parsing, no model. Whatever serve_load measures on it is the cost of the
HTTP stack and the client alone.

example:
  python -m torchport.benchmarks.noop_server 8001
"""
from __future__ import annotations

import argparse
import sys

from torchport.runtime.options import port
from torchport.runtime.serve.server import run_server

RESPONSE = (b'{"model_name":"noop","model_version":"1","outputs":[{"name":"targets","datatype":"FP32",'
            b'"shape":[1,1],"data":[0.0]}]}')
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(RESPONSE)).encode())]


async def app(scope: dict, receive, send) -> None:
    """Answer every HTTP request with RESPONSE once its body is read; accept lifespan events."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    message = await receive()
    while message.get("more_body", False):
        message = await receive()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": RESPONSE})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchport.benchmarks.noop_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=port, help="TCP port to listen on (on 127.0.0.1)")
    args = parser.parse_args(argv)
    run_server(app, "127.0.0.1", args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
