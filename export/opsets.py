"""The ONNX opsets torchport exports: the default and the oldest, without importing torch (the `torchport`
command's options name them before anything heavy is loaded)."""

MIN_OPSET = 13
DEFAULT_OPSET = 18
