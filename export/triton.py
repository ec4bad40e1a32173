"""Triton Inference Server model repository from a bundle: config.pbtxt + VERSION/model.onnx (onnxruntime
backend), and optionally the TorchScript copy as a second model for the libtorch backend. The ONNX version
directory also holds the bundle's manifest.json (and manifest.sig when signed), its large-batch graph and
its report/index.html, so that it is a bundle `torchport serve REPO` can check; Triton reads model.onnx and
ignores the rest."""
from __future__ import annotations

import os
import re
from pathlib import Path

from torchport.export.html_report import REPORT_HTML
from torchport.runtime.bundle import LARGE_BATCH_FILE, MANIFEST, ONNX_FILE, THREADED_FILE, TORCHSCRIPT_FILE, Bundle, refuse_failed_parity
from torchport.runtime.errors import Fix, InputError
from torchport.runtime.files import staged_dir, write_text
from torchport.runtime.signing import SIGNATURE_FILE

NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
CONFIG_FILE = "config.pbtxt"


def _tensor(name: str, width: int, datatype: str) -> str:
    return f'  {{\n    name: "{name}"\n    data_type: TYPE_{datatype}\n    dims: [ {width} ]\n  }}'


def model_config(name: str, backend: str, inputs: list[tuple[str, int]], outputs: list[tuple[str, int]],
                 max_batch_size: int, max_queue_delay_us: int, datatype: str = "FP32") -> str:
    """config.pbtxt text (protobuf text format of Triton's ModelConfig); dims exclude the batch dimension;
    ``datatype``: the tensors' (FP32, or FP64 for a float64 bundle)."""
    lines = [f'name: "{name}"', f'backend: "{backend}"', f"max_batch_size: {max_batch_size}",
             "input [", ",\n".join(_tensor(n, w, datatype) for n, w in inputs), "]",
             "output [", ",\n".join(_tensor(n, w, datatype) for n, w in outputs), "]",
             "dynamic_batching {", f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    return "\n".join(lines) + "\n"


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # report/index.html
    path.write_bytes(data)


def _write_model(repo: Path, name: str, version: int, config: str, files: dict[str, bytes], force: bool) -> Path:
    """REPO/name/{config.pbtxt, VERSION/files}: a new model directory, or a version added to an existing one
    (its config.pbtxt kept unless ``force``), each built in a temp dir and renamed into place."""
    target = repo / name
    version_dir = target / str(version)
    if version_dir.exists() and not force:
        raise InputError(f"{version_dir} exists", parameter="force", fixes=(Fix({"force": True}, "to replace it"),))
    if not target.exists():
        with staged_dir(target) as stage:
            (stage / str(version)).mkdir()
            for file_name, data in files.items():
                _write_file(stage / str(version) / file_name, data)
            (stage / CONFIG_FILE).write_text(config)
        return target
    with staged_dir(version_dir, replace=force) as stage:
        for file_name, data in files.items():
            _write_file(stage / file_name, data)
    if force or not (target / CONFIG_FILE).exists():
        write_text(target / CONFIG_FILE, config)
    return target


def write_triton_repository(bundle: Bundle | str | os.PathLike, repo: str | os.PathLike, *, name: str | None = None,
                            max_batch_size: int = 4096, max_queue_delay_us: int = 100,
                            libtorch: bool = False, force: bool = False, version: int = 1,
                            allow_failed_parity: bool = False) -> list[Path]:
    """Add the bundle to a Triton model repository as version ``version`` of the model ``name``; returns the
    model directories written. A bundle whose parity check failed is refused (ParityError) unless
    ``allow_failed_parity``."""
    bundle, repo = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle), Path(repo)
    manifest = bundle.manifest
    if manifest.parity_failed and not allow_failed_parity:
        raise refuse_failed_parity(bundle)
    name = name or bundle.path.resolve().name
    if not NAME.match(name) or name.startswith("."):
        raise InputError(f"Triton model name {name!r} may only use letters, digits, '_', '.' and '-' (not first)",
                         parameter="name")
    if max_batch_size < 1:
        raise InputError(f"max_batch_size must be >= 1; got {max_batch_size}", parameter="max_batch_size")
    if not isinstance(version, int) or version < 1:
        raise InputError(f"version must be a whole number >= 1; got {version!r}", parameter="version")
    if libtorch and not bundle.has(TORCHSCRIPT_FILE):
        raise InputError(f"{bundle.path} holds no {TORCHSCRIPT_FILE} for the libtorch backend (torch did not write "
                         "it, or it was not asked for); re-export the bundle with formats that include torchscript",
                         parameter="libtorch")
    files = {ONNX_FILE: bundle.read(ONNX_FILE)}  # checked before anything is written
    for variant in (LARGE_BATCH_FILE, THREADED_FILE):  # the graphs `torchport serve` runs from this version too
        if bundle.has(variant):
            files[variant] = bundle.read(variant)
    if bundle.has(REPORT_HTML):  # the served version's report, checked like the model
        files[REPORT_HTML] = bundle.read(REPORT_HTML)
    if manifest.golden is not None:  # the golden cases `torchport serve` runs on loading, checked like the model
        files[manifest.golden.file] = bundle.read(manifest.golden.file)
    files[MANIFEST] = bundle.manifest_bytes or (bundle.path / MANIFEST).read_bytes()
    if (bundle.path / SIGNATURE_FILE).is_file():
        files[SIGNATURE_FILE] = (bundle.path / SIGNATURE_FILE).read_bytes()
    script_bytes = bundle.read(TORCHSCRIPT_FILE) if libtorch else b""
    repo.mkdir(parents=True, exist_ok=True)
    n_in, n_out = len(manifest.features), len(manifest.targets)
    inp, out = manifest.input.name, manifest.output.name
    datatype = "FP64" if manifest.dtype == "float64" else "FP32"
    written = [_write_model(repo, name, version, model_config(name, "onnxruntime", [(inp, n_in)], [(out, n_out)],
                                                              max_batch_size, max_queue_delay_us, datatype),
                            files, force)]
    if libtorch:
        # libtorch models name their tensors by position: INPUT__0 is forward's first argument.
        ts_name = f"{name}_libtorch"
        config = model_config(ts_name, "pytorch", [("INPUT__0", n_in)], [("OUTPUT__0", n_out)],
                              max_batch_size, max_queue_delay_us, datatype)
        written.append(_write_model(repo, ts_name, version, config, {"model.pt": script_bytes}, force))
    return written
