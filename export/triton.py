"""Triton Inference Server model repository from a bundle: config.pbtxt + 1/model.onnx (onnxruntime
backend), and optionally the TorchScript copy as a second model for the libtorch backend."""
from __future__ import annotations

import os
import re
from pathlib import Path

from torchport.runtime.bundle import ONNX_FILE, TORCHSCRIPT_FILE, Bundle
from torchport.runtime.errors import Fix, InputError
from torchport.runtime.files import staged_dir

NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _tensor(name: str, width: int) -> str:
    return f'  {{\n    name: "{name}"\n    data_type: TYPE_FP32\n    dims: [ {width} ]\n  }}'


def model_config(name: str, backend: str, inputs: list[tuple[str, int]], outputs: list[tuple[str, int]],
                 max_batch_size: int, max_queue_delay_us: int) -> str:
    """config.pbtxt text (protobuf text format of Triton's ModelConfig); dims exclude the batch dimension."""
    lines = [f'name: "{name}"', f'backend: "{backend}"', f"max_batch_size: {max_batch_size}",
             "input [", ",\n".join(_tensor(n, w) for n, w in inputs), "]",
             "output [", ",\n".join(_tensor(n, w) for n, w in outputs), "]",
             "dynamic_batching {", f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    return "\n".join(lines) + "\n"


def _write_model(repo: Path, name: str, config: str, file_name: str, data: bytes, force: bool) -> Path:
    """REPO/name/{config.pbtxt, 1/file_name}, built in a temp dir and renamed into place."""
    target = repo / name
    if target.exists() and not force:
        raise InputError(f"{target} exists", parameter="force", fix=Fix("force", True, "to replace it"))
    with staged_dir(target, replace=force) as stage:
        (stage / "1").mkdir()
        (stage / "1" / file_name).write_bytes(data)
        (stage / "config.pbtxt").write_text(config)
    return target


def write_triton_repository(bundle: Bundle | str | os.PathLike, repo: str | os.PathLike, *, name: str | None = None,
                            max_batch_size: int = 4096, max_queue_delay_us: int = 100,
                            libtorch: bool = False, force: bool = False) -> list[Path]:
    """Add the bundle to a Triton model repository; returns the model directories written."""
    bundle, repo = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle), Path(repo)
    manifest = bundle.manifest
    name = name or bundle.path.resolve().name
    if not NAME.match(name):
        raise InputError(f"Triton model name {name!r} may only use letters, digits, '_', '.' and '-'",
                         parameter="name")
    if max_batch_size < 1:
        raise InputError(f"max_batch_size must be >= 1; got {max_batch_size}", parameter="max_batch_size")
    onnx_bytes = bundle.read(ONNX_FILE)  # checked before anything is written
    if libtorch and not bundle.has(TORCHSCRIPT_FILE):
        raise InputError(f"{bundle.path} holds no {TORCHSCRIPT_FILE} for the libtorch backend (torch did not write "
                         "it, or it was not asked for); re-export the bundle with formats that include torchscript",
                         parameter="libtorch")
    script_bytes = bundle.read(TORCHSCRIPT_FILE) if libtorch else b""
    repo.mkdir(parents=True, exist_ok=True)
    n_in, n_out = len(manifest.features), len(manifest.targets)
    inp, out = manifest.input.name, manifest.output.name
    written = [_write_model(repo, name, model_config(name, "onnxruntime", [(inp, n_in)], [(out, n_out)],
                                                     max_batch_size, max_queue_delay_us),
                            "model.onnx", onnx_bytes, force)]
    if libtorch:
        # libtorch models name their tensors by position: INPUT__0 is forward's first argument.
        ts_name = f"{name}_libtorch"
        config = model_config(ts_name, "pytorch", [("INPUT__0", n_in)], [("OUTPUT__0", n_out)],
                              max_batch_size, max_queue_delay_us)
        written.append(_write_model(repo, ts_name, config, "model.pt", script_bytes, force))
    return written
