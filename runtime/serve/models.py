"""A served model version: the Predictor of one checked bundle with its batcher, response encoder and
statistics, and ``load_model``, the one function that turns a bundle on disk into one (and refuses what does
not check). REST and gRPC requests for the version share all of it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2

from torchport.runtime.bundle import Bundle, refuse_failed_parity
from torchport.runtime.errors import BundleError, ParityError
from torchport.runtime.files import remove_leftovers
from torchport.runtime.predictor import Predictor
from torchport.runtime.serve.batching import Batcher
from torchport.runtime.serve.inference import DATATYPES, ModelInfo
from torchport.runtime.serve.protocol import ResponseEncoder
from torchport.runtime.serve.repository import model_config
from torchport.runtime.serve.stats import ModelStats


@dataclass(frozen=True)
class LoadSettings:
    """How every model version is loaded and batched: ONNX Runtime providers, the batcher's settings, the
    public keys a bundle must be signed by (None: signatures are not asked for), whether a bundle whose
    parity check or self-check failed is served anyway (for inspection), and the seconds a version's load may
    take before it is given up."""
    providers: Any = "auto"
    max_batch_size: int = 64
    max_queue_delay_us: int = 0
    trusted_keys: tuple | None = None
    allow_failed_parity: bool = False
    load_timeout_s: float = 60.0


class ServedModel:
    """One model version being served: what it answers with, how requests for it are batched and counted."""

    def __init__(self, name: str, version: str, path: Path, predictor: Predictor, settings: LoadSettings,
                 fingerprint: str, config: model_config_pb2.ModelConfig | None = None, checks: str = "",
                 stats: ModelStats | None = None):
        self.name, self.version, self.path, self.fingerprint = name, version, path, fingerprint
        self.predictor, self.checks, self.entry_config = predictor, checks, config
        self.settings = settings
        self.info = ModelInfo(name=name, version=version, input_name=predictor.input_name,
                              output_name=predictor.output_name, feature_names=tuple(predictor.feature_names),
                              target_names=tuple(predictor.target_names),
                              datatype=DATATYPES[str(predictor.dtype)],
                              intervals=predictor.manifest.intervals if predictor.manifest else None)
        self.stats = stats or ModelStats(name, version, settings.max_batch_size)
        self.batcher = Batcher(predictor.predict, settings.max_batch_size, settings.max_queue_delay_us / 1e6,
                               self.stats, predictor.dtype)
        self.encoder = ResponseEncoder(self.info)

    def config(self) -> model_config_pb2.ModelConfig:
        """Triton's ModelConfig of this version (the model configuration extension)."""
        info = self.info
        return model_config(self.entry_config, self.name, info.input_name, len(info.feature_names),
                            info.output_name, len(info.target_names), self.settings.max_batch_size,
                            self.settings.max_queue_delay_us, info.datatype)


def load_model(path: Path, name: str, version: str, settings: LoadSettings, fingerprint: str,
               config: model_config_pb2.ModelConfig | None = None, stats: ModelStats | None = None) -> ServedModel:
    """Load the bundle at ``path`` as version ``version`` of the model ``name``, refusing (BundleError or
    ParityError, the reason named) a malformed manifest, a file whose sha256 differs from it, a bundle whose
    parity record is missing or failed or whose golden cases fail here (check_bundle), and, with trusted
    keys, one that none of them signed. An .onnx file (only ever the single model of a server) carries none
    of these and is served unchecked, unless keys are trusted. Leftovers of killed writers beside the
    bundle are removed first."""
    remove_leftovers(path)  # of writers killed beside it (a live writer's are left alone)
    if path.name.isdigit():  # a version directory: its model directory too may have been written beside
        remove_leftovers(path.parent)
    if path.is_file():
        predictor = Predictor(path, providers=settings.providers, trusted_keys=settings.trusted_keys)
        return ServedModel(name, version, path, predictor, settings, fingerprint, config,
                           "a bare .onnx file: no manifest, so no sha256 or parity check", stats)
    bundle = Bundle.open(path)
    predictor = Predictor(bundle, providers=settings.providers, trusted_keys=settings.trusted_keys,
                          allow_failed_parity=True)  # check_bundle says why, or lets it through
    checks = "sha256 checked, " + check_bundle(bundle, predictor, settings.allow_failed_parity) + \
        (f", signed by key {predictor.signed_by}" if predictor.signed_by else "")
    return ServedModel(name, version, path, predictor, settings, fingerprint, config, checks, stats)


def check_bundle(bundle: Bundle, predictor: Predictor, allow_failed_parity: bool = False) -> str:
    """Whether ``bundle`` may be served by ``predictor``, in words: its parity record must exist and have
    passed, and its golden cases must pass on the predictor's providers (``Predictor.self_check``); else
    BundleError or ParityError, unless ``allow_failed_parity`` lets a failed one through (said in the words)."""
    parity = bundle.manifest.parity
    if parity is None:
        raise BundleError(f"{bundle.path} has no parity record (it was never verified); run `torchport verify` on it")
    if not parity.passed and not allow_failed_parity:
        raise refuse_failed_parity(bundle)
    try:
        note = str(predictor.self_check())
    except ParityError as e:
        if not allow_failed_parity:
            raise
        note = f"{e} (served anyway: allow_failed_parity)"
    return ("parity passed" if parity.passed else "parity FAILED (served anyway: allow_failed_parity)") + f", {note}"
