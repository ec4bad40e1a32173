"""The model repository that `torchport serve PATH` reads, laid out as Triton lays it out: PATH/NAME/1/,
PATH/NAME/2/, ... (each a bundle), or PATH/NAME/ a bundle itself (version 1), with an optional
PATH/NAME/config.pbtxt (Triton's ModelConfig in protobuf text, as `torchport export --triton` writes it)
whose version_policy chooses the versions served (latest 1 by default). PATH may also be one bundle or one
.onnx file: then it is the only model. Scanning only lists and fingerprints; loading is `models.py`'s."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from torchport.runtime.bundle import MANIFEST, MAX_MANIFEST_BYTES, read_bounded
from torchport.runtime.errors import BundleError

CONFIG_FILE = "config.pbtxt"
MAX_CONFIG_BYTES = 1024 * 1024  # a config.pbtxt is a few hundred bytes
ONNX_BACKENDS = ("", "onnxruntime")
ONNX_PLATFORMS = ("", "onnxruntime_onnx")
_INT64_FIELDS = ("dims", "versions", "max_queue_delay_microseconds")


@dataclass(frozen=True)
class VersionPolicy:
    """Triton's version_policy: the ``num_versions`` highest versions (latest), all, or the ones listed."""
    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[str, ...] = ()

    def select(self, available: list[str]) -> list[str]:
        """The versions to serve among ``available`` (numeric directory names), highest first."""
        ordered = sorted(available, key=int, reverse=True)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[:self.num_versions]

    def describe(self) -> str:
        return {"all": "all versions", "specific": f"versions {', '.join(self.versions)}"}.get(
            self.kind, f"the latest {self.num_versions} version(s)")


@dataclass(frozen=True)
class ModelEntry:
    """One model of the repository as found on disk: its version directories, its config (when there is a
    config.pbtxt) and the reason it cannot be served at all, if any."""
    name: str
    path: Path
    versions: dict[str, Path]
    policy: VersionPolicy = VersionPolicy()
    config: model_config_pb2.ModelConfig | None = field(default=None, compare=False)
    problem: str | None = None

    def selected(self) -> dict[str, Path]:
        """The version directories the policy serves."""
        return {v: self.versions[v] for v in self.policy.select(list(self.versions))}


def _policy(config: model_config_pb2.ModelConfig) -> VersionPolicy:
    if not config.HasField("version_policy"):
        return VersionPolicy()
    choice = config.version_policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy("all")
    if choice == "specific":
        return VersionPolicy("specific", versions=tuple(str(v) for v in config.version_policy.specific.versions))
    return VersionPolicy("latest", max(1, config.version_policy.latest.num_versions))


def _read_config(model_dir: Path, name: str) -> tuple[model_config_pb2.ModelConfig | None, str | None]:
    """The parsed config.pbtxt (None when absent) and the reason it makes the model unservable, if any."""
    path = model_dir / CONFIG_FILE
    try:
        text = read_bounded(path, MAX_CONFIG_BYTES, "is too large for a model configuration",
                            "write it as `torchport export --triton` does").decode("utf-8")
    except FileNotFoundError:
        return None, None
    except BundleError as e:
        return None, str(e)
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{path} cannot be read ({e})"
    try:
        config = text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        return None, f"{path} is not a valid Triton model configuration ({e})"
    if config.name and config.name != name:
        return config, f"{path} names the model {config.name!r}, not {name!r} (its directory)"
    if config.backend not in ONNX_BACKENDS or config.platform not in ONNX_PLATFORMS:
        return config, (f"{path} asks for backend {config.backend!r} / platform {config.platform!r}; torchport "
                        "serves ONNX models (backend onnxruntime) only")
    return config, None


def is_version_dir(path: Path) -> bool:
    """Triton's rule: a version is a directory named by a positive whole number without leading zeros."""
    return path.is_dir() and path.name.isdigit() and not path.name.startswith("0")


def scan_model(model_dir: Path, name: str) -> ModelEntry:
    """One model directory of a repository: a bundle itself (version 1) or version directories."""
    config, problem = _read_config(model_dir, name)
    policy = _policy(config) if config is not None else VersionPolicy()
    if (model_dir / MANIFEST).is_file():
        versions = {"1": model_dir}
    else:
        versions = {p.name: p for p in sorted(model_dir.iterdir()) if is_version_dir(p)} if model_dir.is_dir() else {}
        if not versions and problem is None:
            problem = (f"{model_dir} holds no version directory (1/, 2/, ...) and no {MANIFEST}: nothing to "
                       "serve")
    return ModelEntry(name, model_dir, versions, policy, config, problem)


def is_single_model(path: Path) -> bool:
    """Whether ``path`` is one model (a bundle directory or an .onnx file) rather than a repository."""
    return path.is_file() or (path / MANIFEST).is_file()


def scan(root: Path, model_name: str | None = None) -> dict[str, ModelEntry]:
    """Every model under ``root`` (hidden directories, such as the staging directories of an atomic copy,
    are skipped); for a single bundle or .onnx file, that one model, named ``model_name`` or after it."""
    if is_single_model(root):
        name = model_name or root.resolve().name.removesuffix(".onnx")
        return {name: ModelEntry(name, root, {"1": root})}
    return {p.name: scan_model(p, p.name) for p in sorted(root.iterdir())
            if p.is_dir() and not p.name.startswith(".")}


def fingerprint(path: Path) -> str:
    """What changes when a version's files change: every file's name, size, modification time and inode,
    and the manifest's bytes (so that a rewrite keeping sizes and times is seen too)."""
    h = hashlib.sha256()
    try:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in files:
            st = p.stat()
            h.update(f"{p.relative_to(path) if p != path else p.name}\0{st.st_size}\0{st.st_mtime_ns}\0"
                     f"{st.st_ino}\n".encode())
        if path.is_dir() and (path / MANIFEST).is_file():
            h.update(read_bounded(path / MANIFEST, MAX_MANIFEST_BYTES))
    except (OSError, BundleError) as e:  # a file vanished while the directory was being copied, or the manifest
        h.update(f"unreadable: {e}".encode())  # is no regular file: changed, try again later
    return h.hexdigest()


def config_json(config: model_config_pb2.ModelConfig) -> dict:
    """The model configuration extension's answer (``GET /v2/models/NAME/config``, what perf_analyzer
    reads): the ModelConfig message as Triton writes it in JSON."""
    return _int64_as_numbers(json_format.MessageToDict(config, preserving_proto_field_name=True))


def model_config(entry_config: model_config_pb2.ModelConfig | None, name: str, input_name: str, n_features: int,
                 output_name: str, n_targets: int, max_batch_size: int,
                 max_queue_delay_us: int, datatype: str = "FP32") -> model_config_pb2.ModelConfig:
    """The ModelConfig message of a served model: its config.pbtxt when there is one, with the served
    model's tensors (of ``datatype``, FP32 or FP64), and the server's batching where the file says nothing."""
    config = model_config_pb2.ModelConfig()
    if entry_config is not None:
        config.CopyFrom(entry_config)
    config.name, config.platform, config.backend = name, "onnxruntime_onnx", "onnxruntime"
    if not config.max_batch_size:
        config.max_batch_size = max_batch_size
    del config.input[:]
    del config.output[:]
    data_type = model_config_pb2.DataType.Value(f"TYPE_{datatype}")
    config.input.add(name=input_name, data_type=data_type, dims=[n_features])
    config.output.add(name=output_name, data_type=data_type, dims=[n_targets])
    if not config.HasField("dynamic_batching"):
        config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    return config


def _int64_as_numbers(obj):
    """Triton's JSON writes int64 fields (dims, versions, delays) as numbers, protobuf's JSON as strings."""
    if isinstance(obj, dict):
        return {k: ([int(x) for x in v] if isinstance(v, list) and k in _INT64_FIELDS
                    else int(v) if isinstance(v, str) and k in _INT64_FIELDS else _int64_as_numbers(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_int64_as_numbers(x) for x in obj]
    return obj
