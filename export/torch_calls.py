"""How torchport calls torch's exporters and compilers: with their chatter kept out of users' terminals,
and their failures as one ExportError that names torch's version and the first line of its message."""
from __future__ import annotations

import contextlib
import logging
import warnings

import torch

from torchport.runtime.errors import TorchportError


class ExportError(TorchportError):
    """The exporter could not write what was asked for."""
    exit_code = 1


def first_line(error: BaseException) -> str:
    """``Type: first line of the message`` of an error torch raised."""
    text = str(error)
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def export_error(what: str, error: BaseException) -> ExportError:
    """``torch X could not <what>: <its error>``."""
    return ExportError(f"torch {torch.__version__} could not {what}: {first_line(error)}")


@contextlib.contextmanager
def quiet_torch():
    """Keep the exporters' deprecation notices and registry chatter out of users' terminals: they are about
    torch's API (TorchScript is deprecated upstream), not about the files torchport writes."""
    names = ("torch.onnx", "torch.export", "torch._export", "torch._inductor", "torch._dynamo", "onnxscript")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*deprecated.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def evaluating(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in eval mode; an ExportedProgram's module (which refuses eval(): it has no training mode)
    as it is."""
    try:
        return module.eval()
    except NotImplementedError:
        return module
