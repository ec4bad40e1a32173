"""Triton Inference Server model repository from a bundle: config.pbtxt + 1/model.onnx (onnxruntime
backend), and optionally the TorchScript copy as a second model for the libtorch backend."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from torchport.runtime.bundle import ONNX_FILE, TORCHSCRIPT_FILE, load_manifest, read_checked, umask_mode

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
        raise FileExistsError(f"{target} exists; pass --force to replace it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=repo))
    try:
        os.chmod(tmp, umask_mode(0o777))
        (tmp / "1").mkdir()
        (tmp / "1" / file_name).write_bytes(data)
        (tmp / "config.pbtxt").write_text(config)
        if target.exists():
            old = repo / f".{name}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def write_triton_repository(bundle: str | os.PathLike, repo: str | os.PathLike, *, name: str | None = None,
                            max_batch_size: int = 4096, max_queue_delay_us: int = 100,
                            libtorch: bool = False, force: bool = False) -> list[Path]:
    """Add the bundle to a Triton model repository; returns the model directories written."""
    bundle, repo = Path(bundle), Path(repo)
    manifest = load_manifest(bundle)
    name = name or bundle.resolve().name
    if not NAME.match(name):
        raise ValueError(f"Triton model name {name!r} may only use letters, digits, '_', '.' and '-'")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1; got {max_batch_size}")
    onnx_bytes = read_checked(bundle, ONNX_FILE, manifest)  # checked before anything is written
    script_bytes = read_checked(bundle, TORCHSCRIPT_FILE, manifest) if libtorch else b""
    repo.mkdir(parents=True, exist_ok=True)
    n_in, n_out = len(manifest["features"]), len(manifest["targets"])
    inp, out = manifest["inputs"][0]["name"], manifest["outputs"][0]["name"]
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
