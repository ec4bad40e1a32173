"""Predictor: one object that scores rows with ONNX Runtime sessions over a bundle or an .onnx file."""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from torchport.runtime import hot_path
from torchport.runtime.bundle import LARGE_BATCH_FILE, MANIFEST, ONNX_FILE, THREADED_FILE, Bundle, Manifest, read_bounded, \
    refuse_failed_parity
from torchport.runtime.golden import Golden, SelfCheck, load_golden, self_check
from torchport.runtime.cpus import usable_cpus
from torchport.runtime.device import DLPACK_CUDA, dlpack_device, run_on_device
from torchport.runtime.encoding import UNSEEN, Encoding
from torchport.runtime.engine import Engine
from torchport.runtime.errors import BundleError, InputError, InputTypeError
from torchport.runtime.inputs import answer_like, as_matrix, refuse_nonfinite
from torchport.runtime.plan import Plan, machine_key
from torchport.runtime.providers import CUDA, ProviderFallbackWarning, resolve_providers


class UnseenLevelWarning(UserWarning):
    """Rows whose categorical cell held a level the model was not trained on were scored as the reference
    level (``unseen="reference"``); ``rows`` lists them (0-based)."""

    def __init__(self, message: str, rows: list[int]):
        super().__init__(message)
        self.rows = rows


_ndarray, _isfinite, _finite = np.ndarray, math.isfinite, hot_path.finite
_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


class Predictor:
    """Loads ``model.onnx`` (checked against the bundle's manifest) and answers ``predict``.

    ``providers``: "auto" (CUDA then CPU), "cpu", "cuda", or ONNX Runtime provider names in order.
    After construction ``providers`` lists what the session really uses. How a numpy batch of each size
    runs (which graph file, how many threads, through bound buffers or zero-copy, whole or in chunks) is
    ``plan`` (``torchport.runtime.plan``). By default it follows rules from the model's shape: small
    batches through pooled bound buffers on one-thread sessions; for a linear model with
    ``model.large_batch.onnx`` (its single-input layers as Mul+Add: ``large_batch_graph`` is then True) that
    graph from 65 rows, from ``large_batch_rows`` rows on a session using ``intra_op_threads`` (default:
    every core), inputs over 8 MiB in 1 MiB chunks; for MLPs (whose large-batch graph has the scaling folded
    into the weights and runs every size) smaller batches whole, on one thread, or on ``intra_op_threads``
    from 4 MFLOP of arithmetic a call when a layer has 64 units or more or the bundle has
    ``model.threaded.onnx`` (the graph whose hidden biases ride in a column of ones, which those runs then
    use), and batches of two cache-sized chunks or more (past four with the threaded graph) chunk by chunk
    on the one-thread session, shared out between the calling thread and ``intra_op_threads - 1`` helpers.
    ``plan="measure"`` (or ``tune()``) measures those regimes and the others on this machine and keeps the
    fastest for each size; a saved plan (a path, or a ``Plan``) is taken only on the machine and graphs it
    was measured on. With the ``openvino`` extra, a measured plan may run steps through OpenVINO (float32
    graphs on the CPU; where openvino is missing ONNX Runtime runs them and the plan's description says so).
    A multi-threaded step runs on one thread while other processes hold the CPUs its threads need (the
    threaded graph's batches of 32 MFLOP or more keep their threads there, not spinning).
    ``precision="bf16"`` (asked for, never chosen otherwise) runs an MLP's batches past 64 rows in bf16
    through OpenVINO; the plan records their error on the golden cases against float64 and the bound that
    ``self_check`` then holds answers to. Sessions other than the first are made on first use. ``sess_options`` replaces them
    all with one session on ``model.onnx`` built from the caller's options. One Predictor may serve many
    threads at once. NaN and infinite inputs are refused (the error names the first bad row and column)
    unless ``allow_nonfinite``. A bundle whose recorded parity check failed (published with
    publish_failed) is refused (ParityError) unless ``allow_failed_parity``. ``self_check()`` runs the
    bundle's golden cases. ``engine`` (``torchport.runtime.engine.Engine``) is what runs the batches: its
    graphs and their digests, sessions, slot pools and golden cases, for tools that measure or check them.

    ``trusted_keys`` (ed25519 public keys, or paths to PEM files of them): refuse a bundle unless its
    ``manifest.sig`` is a signature by one of them (see ``torchport.runtime.signing``).

    A bundle with categorical or imputed columns (the manifest's ``encoding``) takes their cells as they
    come: strings (DataFrame columns, lists of rows, object arrays) mapped to level codes, NaN or None where
    the bundle imputes; a numeric array holds the codes themselves. An unseen level is refused naming the
    column and value, or with ``unseen="reference"`` scored as the reference level, the rows named by an
    UnseenLevelWarning (``encode`` gives the codes and the flags)."""

    def __init__(self, path: str | os.PathLike | Bundle, providers: str | list[str] = "auto",
                 sess_options: ort.SessionOptions | None = None, intra_op_threads: int | None = None,
                 large_batch_rows: int = hot_path.LARGE_ROWS, allow_nonfinite: bool = False,
                 allow_failed_parity: bool = False, trusted_keys: Any = None,
                 plan: Plan | str | os.PathLike | None = None, precision: str = "f32", unseen: str = "refuse"):
        self.allow_nonfinite = allow_nonfinite
        if unseen not in UNSEEN:
            raise InputError(f"unseen must be one of {', '.join(UNSEEN)}; got {unseen!r}", parameter="unseen")
        self.unseen = unseen
        golden = None
        variants: dict[str, bytes] = {}  # the rewritten graphs the bundle holds, by file name
        self.signed_by: str | None = None  # the id of the trusted key that signed the bundle
        if isinstance(path, Bundle) or Path(path).is_dir():
            bundle = path if isinstance(path, Bundle) else Bundle.open(path)
            if trusted_keys is not None:
                from torchport.runtime.signing import verify_bundle
                self.signed_by = verify_bundle(bundle, trusted_keys)
            self.manifest: Manifest | None = bundle.manifest
            if bundle.manifest.parity_failed and not allow_failed_parity:
                raise refuse_failed_parity(bundle)
            if bundle.manifest.golden is not None:
                golden = bundle.read(bundle.manifest.golden.file)
            model_bytes = bundle.read(ONNX_FILE)
            variants = {name: bundle.read(name) for name in (LARGE_BATCH_FILE, THREADED_FILE) if bundle.has(name)}
            source = bundle.path / ONNX_FILE
        elif Path(path).is_file():
            if trusted_keys is not None:
                raise BundleError(f"{path} is a bare .onnx file, which carries no signature; with trusted_keys "
                                  "give a signed bundle directory")
            self.manifest = None
            source = Path(path)
            model_bytes = read_bounded(source, None, fix="give the .onnx file itself")
        else:
            raise BundleError(f"{path} does not exist; give a bundle directory (with {MANIFEST}) "
                              "or an .onnx file")
        self._open(model_bytes, variants, golden, source, providers, sess_options, intra_op_threads,
                   large_batch_rows, precision)
        if plan is not None:
            self._take_plan(plan)

    def _open(self, model_bytes: bytes, variants: dict[str, bytes], golden: bytes | None, source: Path,
              providers: str | list[str], sess_options: ort.SessionOptions | None, intra_op_threads: int | None,
              large_batch_rows: int, precision: str = "f32") -> None:
        """Build the engine (its first session) and the plan's state from the graphs' bytes (also used when
        unpickling)."""
        self._init_args = (providers, intra_op_threads, large_batch_rows, sess_options is not None, precision)
        if precision not in ("f32", "bf16"):
            raise InputError(f"precision must be 'f32' or 'bf16'; got {precision!r}", parameter="precision")
        if intra_op_threads is not None and (not isinstance(intra_op_threads, int) or intra_op_threads < 1):
            raise InputError(f"intra_op_threads must be a whole number >= 1; got {intra_op_threads!r}",
                             parameter="intra_op_threads")
        if not isinstance(large_batch_rows, int) or large_batch_rows < 1:
            raise InputError(f"large_batch_rows must be a whole number >= 1; got {large_batch_rows!r}",
                             parameter="large_batch_rows")
        self.intra_op_threads = intra_op_threads or usable_cpus()
        self.large_batch_rows = large_batch_rows
        graphs = {ONNX_FILE: model_bytes}
        if sess_options is None:
            graphs.update(variants)
        self.large_batch_graph = LARGE_BATCH_FILE in graphs
        requested, notes = resolve_providers(providers)
        self.engine = engine = Engine(graphs, source, requested, manifest=self.manifest, golden=golden,
                                      sess_options=sess_options, intra_op_threads=self.intra_op_threads,
                                      large_batch_rows=large_batch_rows, precision=precision)
        if precision != "f32":
            _check_reduced(engine)
        self.providers = engine.providers
        lost = [p for p in requested if p not in self.providers]
        notes += [f"{p} could not be initialised by onnxruntime {ort.__version__} (CUDA 13 / cuDNN 9 "
                  "libraries missing?)" for p in lost]
        if notes:
            warnings.warn("; ".join(notes) + f". Running on {', '.join(self.providers)}.",
                          ProviderFallbackWarning, stacklevel=2)
        self.feature_names, self.target_names = engine.feature_names, engine.target_names
        self.encoding: Encoding | None = self.manifest.encoding if self.manifest is not None else None
        self.input_name, self.output_name = engine.input_name, engine.output_name
        self._run = engine.run
        self._plan_arg: Plan | str | None = None
        self._use(engine.held_to(engine.rules()))

    def _use(self, plan: Plan) -> None:
        """Run batches by ``plan`` from now on (with fresh slot pools, bound to its sessions); OpenVINO steps
        run on ONNX Runtime where OpenVINO cannot run (the plan's notes say so)."""
        if plan.precision != self.engine.precision:
            raise InputError(f"this plan runs in {plan.precision} and this Predictor was made for "
                             f"{self.engine.precision}; pass precision={plan.precision!r} to run it",
                             parameter="precision")
        self.engine.check_plan(plan)
        plan = self.engine.runnable(plan)
        self.plan = plan
        self.engine.drop_slots()
        self._pools: dict[tuple[int, int], list[tuple]] = {}  # by input shape: the pools of the plan's regimes

    def _take_plan(self, plan: Plan | str | os.PathLike) -> None:
        """Apply the ``plan`` argument: "measure", a Plan, or the path of a saved one."""
        if self.engine.custom:
            raise InputError("plan cannot be combined with sess_options (the caller's options make one session)",
                             parameter="plan")
        if isinstance(plan, str) and plan == "measure":
            self.tune()
            self._plan_arg = "measure"
            return
        if not isinstance(plan, Plan):
            if not isinstance(plan, (str, os.PathLike)):
                raise InputTypeError(f"plan must be None, 'measure', a Plan or the path of a saved plan; got "
                                     f"{type(plan).__name__}")
            plan = Plan.load(plan)
        if plan.source == "measured":
            here, graphs = machine_key(), self.engine.graph_digests()
            if plan.machine != here or tuple(plan.models) != graphs:
                what = f"on {plan.machine!r}" if plan.machine != here else "for other graph files"
                raise InputError(f"this plan was measured {what}, not on this machine ({here!r}) with this "
                                 "bundle's graphs; measure one here with `torchport tune BUNDLE --out PLAN` or "
                                 "plan='measure'", parameter="plan")
        if plan.precision != "f32" and plan.precision == self.engine.precision:
            plan = self.engine.held_to(plan)  # a reduced-precision plan's error is measured here, not read
        self._use(plan)
        self._plan_arg = plan

    def tune(self, max_rows: int = 65536, seconds: float = 2.0) -> Plan:
        """Measure every regime that can run each batch size from 1 to ``max_rows`` rows on this machine, now,
        and run each size in the fastest from now on (the rules' regime, else the one chosen at the size
        below, is kept unless another takes at most 0.90 of its time); returns the plan, with what was
        measured (save it with ``plan.save(path)``). About ``seconds`` of measuring, more when one call
        takes longer. Call it before serving: calls made while it measures may run in either plan."""
        from torchport.runtime.tuning import measure_plan
        if self.engine.custom:
            raise InputError("tune() needs the Predictor's own sessions; this one was made with sess_options",
                             parameter="sess_options")
        plan = self.engine.held_to(measure_plan(self.engine, max_rows, seconds,
                                                check=not self.allow_nonfinite and self.encoding is None))
        self._use(plan)
        return plan

    def __reduce__(self):
        """Pickle as the model's bytes and names; the receiving process (a Dask worker, say) builds its own
        ONNX Runtime sessions, resolving ``providers`` ("auto" included) on its own machine, and measures
        its own plan where this one was made with plan="measure"."""
        providers, threads, large_rows, custom_options, precision = self._init_args
        if custom_options:
            raise InputTypeError("a Predictor made with sess_options cannot be pickled (SessionOptions do not "
                            "pickle); use intra_op_threads instead")
        engine = self.engine
        names = (self.manifest, self.feature_names, self.target_names, self.input_name, self.output_name,
                 self.allow_nonfinite, engine.golden)
        plan = self._plan_arg.to_json() if isinstance(self._plan_arg, Plan) else self._plan_arg
        return _unpickle, (engine.graphs[ONNX_FILE], str(engine.source), names, providers, threads, large_rows,
                           {k: v for k, v in engine.graphs.items() if k != ONNX_FILE}, plan, precision)

    def _new_slot(self, rows: int) -> tuple:
        """A fresh slot for predict's fast path, whose pool for ``rows`` rows was empty."""
        return self.engine.slots(self.plan.regime(rows)).new(rows)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def n_targets(self) -> int:
        return len(self.target_names)

    @property
    def widest(self) -> int:
        """Values a row of the graph's widest layer holds (inputs, hidden layers, outputs), from the
        manifest's model spec; a bare .onnx file counts its inputs and outputs only."""
        return self.engine.widest

    @property
    def dtype(self) -> np.dtype:
        """What the model takes and answers: float32, or float64 where the bundle's precision says so."""
        return self.engine.dtype

    def _as_array(self, x: Any) -> np.ndarray:
        """The input as a 2-D numeric numpy array of the right width (not yet of the model's dtype)."""
        return as_matrix(x, self.feature_names)

    def _refuse_nonfinite(self, a: np.ndarray, first_row: int = 0) -> None:
        """Raise naming the first NaN/inf cell of ``a``, rows counted from ``first_row`` (called only once a
        cheap check found one)."""
        refuse_nonfinite(a, self.feature_names, first_row)

    def _check_out(self, out: np.ndarray, rows: int) -> None:
        dtype = self.engine.dtype
        if not (isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == (rows, self.n_targets)
                and out.flags.c_contiguous and out.flags.writeable):
            got = f"{type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}"
            raise InputError(f"out must be a writeable C-contiguous {dtype} array of shape ({rows}, "
                             f"{self.n_targets}); got {got.strip()}")

    def _predict_array(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """The numpy hot path: the batch run in the plan's regime for its size."""
        rows = x.shape[0]
        if out is not None:
            self._check_out(out, rows)
        if rows == 0:
            return np.empty((0, self.n_targets), dtype=self.engine.dtype) if out is None else out
        return self._run(self.plan.regime(rows), x, out, not self.allow_nonfinite, self._pools)

    def predict(self, x: Any, out: np.ndarray | None = None) -> Any:
        """Predict targets for rows of raw features; returns the same kind as given (array, DataFrame, list).

        Answers are float32, or float64 for a bundle whose manifest says float64 (``dtype``); numpy input of
        either dtype (or integers) is taken. Every call returns a new array unless ``out`` (of ``dtype``, shape
        (rows, n_targets)) is given for numpy
        input, which is then filled and returned (when a NaN/inf row is refused, rows before it may already
        be written there). A CUDA array (DLPack) on a CUDA session is run where it
        lies and answered with an OrtValue on the GPU."""
        if self.encoding is not None:
            codes, _ = self.encode(x)
            if out is not None and not isinstance(x, np.ndarray):
                raise InputError("out is only accepted with numpy input", parameter="out")
            rows = codes.shape[0]
            if out is not None:
                self._check_out(out, rows)
            result = self._run(self.plan.regime(rows), codes, out, False, self._pools) if rows else \
                np.empty((0, self.n_targets), dtype=self.dtype)
            return answer_like(x, result, self.target_names)
        if type(x) is _ndarray and out is None:
            pool = self._pools.get(x.shape)  # found only for 2-D shapes of the model's width, <= SLOT_ROWS rows
            if pool is not None:
                dtype = x.dtype
                if dtype is _FLOAT32 or dtype is _FLOAT64:  # the small-batch fast path, as in _predict_array
                    try:
                        slot = pool.pop()
                    except IndexError:
                        slot = self._new_slot(x.shape[0])
                    inp, cell, run, _, copy_out = slot
                    try:
                        if cell is None:
                            inp[...] = x
                            finite = _finite(inp)
                        else:  # one value, through a C double: rounded once, as numpy's cast rounds it
                            cell[0] = x.item()
                            finite = _isfinite(cell[0])
                        if not finite and not self.allow_nonfinite:
                            self._refuse_nonfinite(inp)
                        run()
                        return copy_out()
                    finally:
                        pool.append(slot)
        if type(x) is np.ndarray and x.ndim == 2 and x.shape[1] == self.n_features and x.dtype.kind in "fiu":
            return self._predict_array(x, out)
        device = dlpack_device(x)
        if device is not None and device[0] == DLPACK_CUDA:
            if CUDA not in self.providers:
                raise InputError(f"the input is a CUDA array but this Predictor runs on {self.providers}; "
                                 "create it with providers='cuda' or pass a numpy array")
            return run_on_device(self.engine.first_session, self.input_name, self.output_name, x, self.n_features,
                                 device[1], str(self.dtype))
        if out is not None and not isinstance(x, np.ndarray):
            raise InputError("out is only accepted with numpy input", parameter="out")
        if isinstance(x, (list, tuple)) and len(x) == 0:
            return []
        return answer_like(x, self._predict_array(self._as_array(x), out), self.target_names)

    def predict_interval(self, x: Any, level: float = 0.95, kind: str = "prediction") -> "PredictionInterval":
        """Predictions of ``x`` with their ``level`` intervals and a domain flag per row (a
        ``torchport.runtime.interval_prediction.PredictionInterval``): exact t intervals for a linear model
        (``kind`` "prediction" for a new observation, "mean" for the expected value), split-conformal
        prediction intervals for an MLP; a row beyond the training range of a feature, or (linear) of higher
        leverage than any training row, is flagged with the reason. See docs/intervals.md."""
        from torchport.runtime.interval_prediction import predict_interval
        return predict_interval(self, x, level, kind)

    def encode(self, x: Any, first_row: int = 0, dtype: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The graph's input for ``x`` (codes of ``dtype``, by default the model's; NaN where a missing cell is
        imputed) and per row whether an unseen level was scored as the reference level; InputError for a cell
        the bundle cannot take. Intervals ask for float64: the design they are centred on keeps the values'
        digits."""
        dtype = self.dtype if dtype is None else _code_dtype(dtype)
        columns = self.encoding.columns_of(x)
        if columns is None:
            codes = np.ascontiguousarray(as_matrix(x, self.feature_names), dtype=dtype)
            self.encoding.check_codes(codes, first_row)
            return codes, np.zeros(len(codes), dtype=bool)
        codes, flagged = self.encoding.codes(columns, unseen=self.unseen, first_row=first_row, dtype=dtype)
        if flagged.any():
            rows = [int(i) + first_row for i in np.flatnonzero(flagged)]
            warnings.warn(UnseenLevelWarning(f"{len(rows)} row(s) held a level the model was not trained on and "
                                             f"were scored as the reference level (rows {rows[:10]}"
                                             f"{', ...' if len(rows) > 10 else ''})", rows), stacklevel=3)
        return codes, flagged

    def self_check(self) -> SelfCheck:
        """Run the bundle's golden cases (rows kept at export with their float64 answers) through this
        Predictor, on its providers, as one batch and in batches of up to 64 rows, and through every other
        regime of its plan (so every graph it runs is checked); raise ParityError naming the worst element
        when an answer is further from its float64 value than the export's parity bound allows. A bundle
        without golden cases (written by an older torchport, or a bare .onnx file) is not checked: the
        result says so."""
        if self.engine.golden is None:
            return SelfCheck(False, 0, self.providers, "this model has no golden cases (a bundle written before "
                             "torchport kept them, or a bare .onnx file): nothing was checked")
        golden = load_golden(self.engine.golden, self.feature_names, self.target_names, self.engine.dtype)
        if self.plan.bound:  # a reduced-precision plan: its answers are held to the bound recorded in it
            golden = Golden(golden.inputs, golden.answers, np.asarray(self.plan.bound, np.float64))
        check = not self.allow_nonfinite and self.encoding is None  # imputed golden rows hold NaN
        regimes = [(regime.describe(), lambda x, r=regime: self._run(r, x, None, check, calm=False) if len(x) else
                    np.empty((0, self.n_targets), self.engine.dtype)) for regime in self.plan.regimes()]
        return self_check(self.predict, golden, self.target_names, self.providers, regimes)

    def __repr__(self) -> str:
        return (f"Predictor(features={self.feature_names}, targets={self.target_names}, "
                f"providers={self.providers})")


def _check_reduced(engine: Engine) -> None:
    """Refuse precision='bf16' where it cannot run or gains nothing."""
    why = engine.openvino_unavailable("bf16")
    if why is not None:
        raise InputError(f"precision='bf16' runs through OpenVINO, which cannot run here: {why}",
                         parameter="precision")
    if engine.widest <= max(engine.n_features, engine.n_targets):
        raise InputError("precision='bf16' runs an MLP's hidden layers in bf16; this model has none: leave "
                         "precision='f32'", parameter="precision")


def _unpickle(model_bytes: bytes, source: str, names: tuple, providers, threads, large_rows,
              variants: dict[str, bytes] | bytes | None = None, plan: dict | str | None = None,
              precision: str = "f32") -> Predictor:
    predictor = Predictor.__new__(Predictor)
    predictor.signed_by, predictor.unseen = None, "refuse"
    predictor.manifest, *_, predictor.allow_nonfinite, golden = names
    if isinstance(variants, bytes):  # pickled before the threaded graph: the large-batch graph's bytes
        variants = {LARGE_BATCH_FILE: variants}
    predictor._open(model_bytes, variants or {}, golden, Path(source), providers, None, threads, large_rows,
                    precision)
    if plan is not None:
        predictor._take_plan(Plan.from_json(plan) if isinstance(plan, dict) else plan)
    return predictor


def _code_dtype(dtype: Any) -> np.dtype:
    """``dtype`` for ``Predictor.encode``: float32 or float64, else InputError naming what was given."""
    try:
        chosen = np.dtype(dtype)
    except TypeError:  # not a dtype at all (np.dtype(None) would be float64: never compare with None)
        chosen = np.dtype(object)
    if chosen not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InputError(f"dtype must be float32 or float64; got {dtype!r}", parameter="dtype")
    return chosen
