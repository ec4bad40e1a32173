"""torchport serve: the Open Inference Protocol (KServe V2) over HTTP with dynamic batching. `protocol`,
`batching` and `metrics` are plain Python (numpy, orjson); `app` is a plain ASGI application; `server` runs
it on uvicorn."""
