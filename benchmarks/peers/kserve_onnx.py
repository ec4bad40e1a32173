"""Peer server for torchport.benchmarks.serve_load: KServe's Python ModelServer (V2 REST) answering with an
ONNX Runtime session over the same model.onnx. Runs in its own venv (made by serve_load), never torchport's,
so it imports nothing of torchport and serve_load launches it by its file path.

usage: python kserve_onnx.py MODEL.onnx NAME --http_port PORT [--grpc_port PORT]   (gRPC only when given)
"""
import logging
import sys

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import generate_uuid


class OnnxModel(Model):
    """One ONNX Runtime session behind KServe's V2 predict."""

    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy().astype(np.float32)
        y = self.session.run([self.output_name], {self.input_name: x})[0]
        out = InferOutput(name=self.output_name, shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=False)
        return InferResponse(response_id=payload.id or generate_uuid(), model_name=self.name, infer_outputs=[out])


if __name__ == "__main__":
    model = OnnxModel(sys.argv[2], sys.argv[1])
    server = ModelServer(workers=1, enable_grpc="--grpc_port" in sys.argv, enable_latency_logging=False)
    for name in ("uvicorn.access", "kserve.trace"):  # per-request logging off: give the peer its best case
        logging.getLogger(name).disabled = True
    server.start([model])
