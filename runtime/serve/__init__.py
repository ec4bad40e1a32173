"""torchport serve: the Open Inference Protocol (KServe V2) over HTTP with dynamic batching. The protocol,
batching and metrics modules need only numpy; `app` is a plain ASGI application; `server` runs it on uvicorn."""
