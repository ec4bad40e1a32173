"""Predictor: one object that scores rows with ONNX Runtime sessions over a bundle or an .onnx file."""
from __future__ import annotations

import json
import math
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from torchport.runtime import hot_path
from torchport.runtime.bundle import LARGE_BATCH_FILE, MANIFEST, ONNX_FILE, Bundle, Manifest, refuse_failed_parity, \
    sha256_bytes
from torchport.runtime.golden import SelfCheck, load_golden, self_check
from torchport.runtime.cpus import usable_cpus
from torchport.runtime.device import DLPACK_CUDA, dlpack_device, run_on_device
from torchport.runtime.errors import BundleError, InputError, InputTypeError
from torchport.runtime.hot_path import SLOT_ROWS
from torchport.runtime.inputs import answer_like, as_matrix, refuse_nonfinite
from torchport.runtime.plan import CUSTOM, Plan, Regime, Step, flops_per_row, machine_key, merged
from torchport.runtime.providers import CUDA, ProviderFallbackWarning, resolve_providers
from torchport.runtime.sessions import session_options


_ndarray, _isfinite, _finite = np.ndarray, math.isfinite, hot_path.finite
_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)
_CPU = "CPUExecutionProvider"


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
    from 4 MFLOP of arithmetic a call when a layer has 64 units or more, and batches of two cache-sized
    chunks or more chunk by chunk on the one-thread session, shared out between the calling thread and
    ``intra_op_threads - 1`` helpers.
    ``plan="measure"`` (or ``tune()``) measures those regimes and the others on this machine and keeps the
    fastest for each size; a saved plan (a path, or a ``Plan``) is taken only on the machine and graphs it
    was measured on. Sessions other than the first are made on first use. ``sess_options`` replaces them
    all with one session on ``model.onnx`` built from the caller's options. One Predictor may serve many
    threads at once. NaN and infinite inputs are refused (the error names the first bad row and column)
    unless ``allow_nonfinite``. A bundle whose recorded parity check failed (published with
    publish_failed) is refused (ParityError) unless ``allow_failed_parity``. ``self_check()`` runs the
    bundle's golden cases.

    ``trusted_keys`` (ed25519 public keys, or paths to PEM files of them): refuse a bundle unless its
    ``manifest.sig`` is a signature by one of them (see ``torchport.runtime.signing``)."""

    def __init__(self, path: str | os.PathLike | Bundle, providers: str | list[str] = "auto",
                 sess_options: ort.SessionOptions | None = None, intra_op_threads: int | None = None,
                 large_batch_rows: int = hot_path.LARGE_ROWS, allow_nonfinite: bool = False,
                 allow_failed_parity: bool = False, trusted_keys: Any = None,
                 plan: Plan | str | os.PathLike | None = None):
        self.allow_nonfinite = allow_nonfinite
        large_bytes = None
        self._golden: bytes | None = None
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
                self._golden = bundle.read(bundle.manifest.golden.file)
            model_bytes = bundle.read(ONNX_FILE)
            if bundle.has(LARGE_BATCH_FILE):
                large_bytes = bundle.read(LARGE_BATCH_FILE)
            self.feature_names = list(self.manifest.features)
            self.target_names = list(self.manifest.targets)
            self.input_name, self.output_name = self.manifest.input.name, self.manifest.output.name
            source = bundle.path / ONNX_FILE
        elif Path(path).is_file():
            if trusted_keys is not None:
                raise BundleError(f"{path} is a bare .onnx file, which carries no signature; with trusted_keys "
                                  "give a signed bundle directory")
            self.manifest = None
            source = Path(path)
            model_bytes = source.read_bytes()
        else:
            raise BundleError(f"{path} does not exist; give a bundle directory (with {MANIFEST}) "
                              "or an .onnx file")
        self._open(model_bytes, large_bytes, source, providers, sess_options, intra_op_threads, large_batch_rows)
        if plan is not None:
            self._take_plan(plan)

    def _open(self, model_bytes: bytes, large_bytes: bytes | None, source: Path, providers: str | list[str],
              sess_options: ort.SessionOptions | None, intra_op_threads: int | None, large_batch_rows: int) -> None:
        """Create the first session and hot-path state from the graphs' bytes (also used when unpickling)."""
        self._init_args = (providers, intra_op_threads, large_batch_rows, sess_options is not None)
        if intra_op_threads is not None and (not isinstance(intra_op_threads, int) or intra_op_threads < 1):
            raise InputError(f"intra_op_threads must be a whole number >= 1; got {intra_op_threads!r}",
                             parameter="intra_op_threads")
        if not isinstance(large_batch_rows, int) or large_batch_rows < 1:
            raise InputError(f"large_batch_rows must be a whole number >= 1; got {large_batch_rows!r}",
                             parameter="large_batch_rows")
        self.intra_op_threads = intra_op_threads or usable_cpus()
        self.large_batch_rows = large_batch_rows
        self._model_bytes, self._source = model_bytes, source
        self._large_bytes = None if sess_options is not None else large_bytes
        self.large_batch_graph = self._large_bytes is not None
        self._graphs = {ONNX_FILE: model_bytes}
        if self._large_bytes is not None:
            self._graphs[LARGE_BATCH_FILE] = self._large_bytes
        self._requested, notes = resolve_providers(providers)
        # The large-batch graph runs small batches too unless its rewrite adds nodes (the seed's Mul+Add
        # costs more per call than its one Gemm); MLPs then run one graph at every size.
        rewrite = self.manifest.export.large_batch_graph if self.manifest is not None else None
        small_on_large = self._large_bytes is not None and rewrite is not None \
            and "gemm_k1_to_mul_add" not in rewrite.rewrites
        self._first_graph = LARGE_BATCH_FILE if small_on_large else ONNX_FILE
        self._custom = sess_options is not None
        self._session = self._new_session(sess_options or session_options(1, arena=self._mlp()), self._first_graph)
        self._sessions = {(self._first_graph, CUSTOM if self._custom else 1, False): self._session}
        self.providers = self._session.get_providers()
        lost = [p for p in self._requested if p not in self.providers]
        notes += [f"{p} could not be initialised by onnxruntime {ort.__version__} (CUDA 13 / cuDNN 9 "
                  "libraries missing?)" for p in lost]
        if notes:
            warnings.warn("; ".join(notes) + f". Running on {', '.join(self.providers)}.",
                          ProviderFallbackWarning, stacklevel=2)
        if self.manifest is None:
            self._names_from_graph()
        self._check_io(self._session, self._source_of(self._first_graph))
        self._slot_rows = hot_path.slot_rows(self.n_features, self.n_targets)
        self._by_regime: dict[Regime, hot_path.Runner] = {}
        self._runner_lock = threading.Lock()
        self._plan_arg: Plan | str | None = None
        self._use(self._rules())

    def _source_of(self, graph: str) -> Path:
        return self._source if graph == ONNX_FILE else self._source.parent / graph

    def _rules(self) -> Plan:
        """The default plan, from the model's shape (the class docstring says what it does)."""
        if self._custom:
            return Plan((Step(1, Regime(ONNX_FILE, CUSTOM, bound=True)),
                         Step(SLOT_ROWS + 1, Regime(ONNX_FILE, CUSTOM))))
        first, large = self._first_graph, LARGE_BATCH_FILE if self._large_bytes is not None else ONNX_FILE
        steps = [Step(1, Regime(first, 1, bound=True))]
        if self._mlp():
            chunks = self._shared_chunks(large)
            chunks_from = chunks.chunk_from + 1 if chunks.chunk_rows else math.inf
            per_row = self._flops_per_row()
            threaded_from = math.ceil(hot_path.THREADS_FROM_FLOP / per_row) if per_row and self._cpu() \
                and self.intra_op_threads > 1 and self.widest >= hot_path.THREADS_FROM_WIDTH else math.inf
            bound_to = min(self._slot_rows, threaded_from - 1, chunks_from - 1)
            if bound_to > SLOT_ROWS and large != first:
                steps.append(Step(SLOT_ROWS + 1, Regime(large, 1, bound=True)))
            if max(bound_to, SLOT_ROWS) + 1 < min(threaded_from, chunks_from):
                steps.append(Step(max(bound_to, SLOT_ROWS) + 1, Regime(large, 1)))
            if max(threaded_from, SLOT_ROWS + 1) < chunks_from:
                steps.append(Step(max(threaded_from, SLOT_ROWS + 1), Regime(large, self.intra_op_threads)))
            if chunks_from < math.inf:
                steps.append(Step(max(chunks_from, SLOT_ROWS + 1), chunks))
            return Plan(merged(steps))
        large_from = max(self.large_batch_rows, SLOT_ROWS + 1)
        bound_to = min(self._slot_rows, large_from - 1)
        if bound_to > SLOT_ROWS:
            steps.append(Step(SLOT_ROWS + 1, Regime(large, 1, bound=True)))
        if bound_to + 1 < large_from:
            steps.append(Step(bound_to + 1, self._whole(large, 1)))
        steps.append(Step(large_from, self._whole(large, self.intra_op_threads, spin=self.intra_op_threads > 1)))
        return Plan(merged(steps))

    def _flops_per_row(self) -> int | None:
        """The model's multiply-adds per row (2 FLOP each), from the manifest; None when unknown."""
        model = self.manifest.model if self.manifest is not None else {}
        hidden = tuple(h for h in (model.get("hidden") or ()) if isinstance(h, int))
        return flops_per_row(model.get("kind", ""), self.n_features, self.n_targets, hidden)

    def _mlp(self) -> bool:
        """True for a graph with hidden layers wider than its inputs and outputs, or without a large-batch
        graph: such graphs run large batches in cache-sized chunks."""
        return self._large_bytes is None or self.widest > max(self.n_features, self.n_targets)

    def _cpu(self) -> bool:
        return self.providers[0] == _CPU

    def _whole(self, graph: str, threads: int, spin: bool = False) -> Regime:
        """A zero-copy regime on ``graph``; a linear model's large-batch graph on the CPU runs inputs over
        CHUNK_FROM_BYTES in CHUNK_BYTES chunks (the Mul's output then stays in cache)."""
        if graph == LARGE_BATCH_FILE and not self._mlp() and self._cpu():
            width = 4 * self.n_features
            return Regime(graph, threads, chunk_rows=max(1, hot_path.CHUNK_BYTES // width),
                          chunk_from=hot_path.CHUNK_FROM_BYTES // width, spin=spin)
        return Regime(graph, threads, spin=spin)

    def _shared_chunks(self, graph: str) -> Regime:
        """Cache-sized chunks of ``graph`` on its one-thread session, shared by ``intra_op_threads`` threads
        (on the CPU; elsewhere the batch runs whole)."""
        if not self._cpu():
            return Regime(graph, 1)
        chunk = hot_path.cache_chunk_rows(self.widest)
        return Regime(graph, 1, chunk_rows=chunk, chunk_from=2 * chunk - 1, workers=self.intra_op_threads)

    def _use(self, plan: Plan) -> None:
        """Run batches by ``plan`` from now on (with fresh slot pools, bound to its sessions)."""
        for regime in plan.regimes():
            if regime.graph not in self._graphs or (regime.threads == CUSTOM) != self._custom \
                    or regime.threads < 0 or regime.workers < 1 or regime.chunk_rows < 0:
                raise InputError(f"the plan's regime {regime.describe()!r} cannot run here: this Predictor runs "
                                 f"{', '.join(sorted(self._graphs))}", parameter="plan")
        self.plan = plan
        self._slot_sets: dict[Regime, hot_path.Slots] = {}
        self._pools: dict[tuple[int, int], list[tuple]] = {}  # by input shape: the pools of the plan's regimes

    def _take_plan(self, plan: Plan | str | os.PathLike) -> None:
        """Apply the ``plan`` argument: "measure", a Plan, or the path of a saved one."""
        if self._custom:
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
            here, graphs = machine_key(), self._graph_digests()
            if plan.machine != here or tuple(plan.models) != graphs:
                what = f"on {plan.machine!r}" if plan.machine != here else "for other graph files"
                raise InputError(f"this plan was measured {what}, not on this machine ({here!r}) with this "
                                 "bundle's graphs; measure one here with `torchport tune BUNDLE --out PLAN` or "
                                 "plan='measure'", parameter="plan")
        self._use(plan)
        self._plan_arg = plan

    def _graph_digests(self) -> tuple[str, ...]:
        """The sha256 of each graph file this Predictor may run, in file-name order."""
        return tuple(f"{name}:{sha256_bytes(self._graphs[name])}" for name in sorted(self._graphs))

    def tune(self, max_rows: int = 65536, seconds: float = 2.0) -> Plan:
        """Measure every regime that can run each batch size from 1 to ``max_rows`` rows on this machine, now,
        and run each size in the fastest from now on (the rules' regime, else the one chosen at the size
        below, is kept unless another takes at most 0.90 of its time); returns the plan, with what was
        measured (save it with ``plan.save(path)``). About ``seconds`` of measuring, more when one call
        takes longer. Call it before serving: calls made while it measures may run in either plan."""
        from torchport.runtime.tuning import measure_plan
        if self._custom:
            raise InputError("tune() needs the Predictor's own sessions; this one was made with sess_options",
                             parameter="sess_options")
        plan = measure_plan(self, max_rows, seconds)
        self._use(plan)
        return plan

    def __reduce__(self):
        """Pickle as the model's bytes and names; the receiving process (a Dask worker, say) builds its own
        ONNX Runtime sessions, resolving ``providers`` ("auto" included) on its own machine, and measures
        its own plan where this one was made with plan="measure"."""
        providers, threads, large_rows, custom_options = self._init_args
        if custom_options:
            raise InputTypeError("a Predictor made with sess_options cannot be pickled (SessionOptions do not "
                            "pickle); use intra_op_threads instead")
        names = (self.manifest, self.feature_names, self.target_names, self.input_name, self.output_name,
                 self.allow_nonfinite, self._golden)
        plan = self._plan_arg.to_json() if isinstance(self._plan_arg, Plan) else self._plan_arg
        return _unpickle, (self._model_bytes, str(self._source), names, providers, threads, large_rows,
                           self._large_bytes, plan)

    def _new_session(self, options: ort.SessionOptions, graph: str) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(self._graphs[graph], sess_options=options, providers=self._requested)
        except Exception as e:  # onnxruntime raises its own exception types for invalid models
            raise BundleError(f"{self._source_of(graph)} is not a model ONNX Runtime can load: {e}") from None

    def _session_for(self, regime: Regime) -> ort.InferenceSession:
        """The session of ``regime``'s graph and thread count, made once on first use."""
        key = (regime.graph, regime.threads, regime.spin and regime.threads > 1)
        session = self._sessions.get(key)
        if session is None:
            with self._runner_lock:
                session = self._sessions.get(key)
                if session is None:
                    options = session_options(regime.threads, arena=self._mlp(), spin=key[2])
                    session = self._new_session(options, regime.graph)
                    self._check_io(session, self._source_of(regime.graph))
                    self._sessions[key] = session
        return session

    def _slots_of(self, regime: Regime) -> hot_path.Slots:
        """The slot pools of a bound ``regime``, made once on first use."""
        session = self._session_for(regime)
        with self._runner_lock:
            slots = self._slot_sets.get(regime)
            if slots is None:
                slots = self._slot_sets[regime] = hot_path.Slots(session, self.input_name, self.output_name,
                                                                 self.n_features, self.n_targets)
            return slots

    def _new_slot(self, rows: int) -> tuple:
        """A fresh slot for predict's fast path, whose pool for ``rows`` rows was empty."""
        regime = self.plan.regime(rows)
        return (self._slot_sets.get(regime) or self._slots_of(regime)).new(rows)

    def _runner(self, regime: Regime) -> hot_path.Runner:
        """The zero-copy runner of ``regime`` (of its zero-copy twin for a bound one), made once on first use."""
        runner = self._by_regime.get(regime)
        if runner is None:
            session = self._session_for(regime)
            with self._runner_lock:
                runner = self._by_regime.get(regime)
                if runner is None:
                    runner = hot_path.Runner(session, self.input_name, self.output_name, self.n_targets,
                                             regime.chunk_rows or None, regime.chunk_from, regime.workers)
                    self._by_regime[regime] = runner
        return runner

    def _names_from_graph(self) -> None:
        """Input/output and column names of a bare .onnx file: from torchport's metadata, else x0.., y0.."""
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        meta = self._session.get_modelmeta().custom_metadata_map
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        n_in, n_out = inputs[0].shape[-1], outputs[0].shape[-1]
        self.feature_names = json.loads(meta["torchport.features"]) if "torchport.features" in meta \
            else [f"x{i}" for i in range(n_in if isinstance(n_in, int) else 1)]
        self.target_names = json.loads(meta["torchport.targets"]) if "torchport.targets" in meta \
            else [f"y{i}" for i in range(n_out if isinstance(n_out, int) else 1)]

    def _check_io(self, session: ort.InferenceSession, source: Path) -> None:
        """Refuse a graph whose input and output names and widths disagree with the manifest's."""
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or inputs[0].name != self.input_name or inputs[0].shape[-1] != len(self.feature_names):
            raise BundleError(f"{source}: the graph's inputs {[(i.name, i.shape) for i in inputs]} disagree "
                              f"with the manifest ({self.input_name!r}, {len(self.feature_names)} features)")
        if outputs[0].name != self.output_name or outputs[0].shape[-1] != len(self.target_names):
            raise BundleError(f"{source}: the graph's outputs {[(o.name, o.shape) for o in outputs]} "
                              f"disagree with the manifest ({self.output_name!r}, {len(self.target_names)} targets)")

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
        hidden = (self.manifest.model.get("hidden") or []) if self.manifest is not None else []
        return max([self.n_features, self.n_targets, *(h for h in hidden if isinstance(h, int))])

    def _as_array(self, x: Any) -> np.ndarray:
        """The input as a 2-D numeric numpy array of the right width (not yet float32)."""
        return as_matrix(x, self.feature_names)

    def _refuse_nonfinite(self, a: np.ndarray, first_row: int = 0) -> None:
        """Raise naming the first NaN/inf cell of ``a``, rows counted from ``first_row`` (called only once a
        cheap check found one)."""
        refuse_nonfinite(a, self.feature_names, first_row)

    def _check_rows(self, a: np.ndarray, first_row: int = 0) -> None:
        """One pass over ``a`` (float32, C-contiguous); a false alarm is cleared by checking each element."""
        if a.size and not _finite(a):
            self._refuse_nonfinite(a, first_row)

    def _check_out(self, out: np.ndarray, rows: int) -> None:
        if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (rows, self.n_targets)
                and out.flags.c_contiguous and out.flags.writeable):
            got = f"{type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}"
            raise InputError(f"out must be a writeable C-contiguous float32 array of shape ({rows}, "
                             f"{self.n_targets}); got {got.strip()}")

    def _predict_array(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """The numpy hot path: the batch run in the plan's regime for its size."""
        rows = x.shape[0]
        if out is not None:
            self._check_out(out, rows)
        if rows == 0:
            return np.empty((0, self.n_targets), dtype=np.float32) if out is None else out
        return self._run_in(self.plan.regime(rows), x, out, planned=True)

    def _run_in(self, regime: Regime, x: np.ndarray, out: np.ndarray | None, planned: bool = False) -> np.ndarray:
        """``x`` (rows >= 1, any numeric dtype and layout) run in ``regime``: through a pooled slot's bound
        buffers (one copy in, which converts dtype and layout too) or zero-copy from float32 C-contiguous.
        ``planned``: ``regime`` is the plan's for this size, so its pool may serve predict's fast path."""
        rows = x.shape[0]
        if regime.bound and rows <= self._slot_rows:
            slots = self._slot_sets.get(regime) or self._slots_of(regime)
            pool = slots.pool(rows)
            if pool is not None:
                if planned:
                    self._pools[rows, self.n_features] = pool  # found by predict's fast path from now on
                try:
                    slot = pool.pop()
                except IndexError:
                    slot = slots.new(rows)
                inp, _, run, result, copy_out = slot
                try:
                    inp[...] = x
                    if not self.allow_nonfinite:
                        self._check_rows(inp)
                    run()
                    if out is None:
                        return copy_out()  # the slot serves later calls: never hand it out
                    out[...] = result
                    return out
                finally:
                    pool.append(slot)
        matrix = np.ascontiguousarray(x, dtype=np.float32)  # no copy when already float32 C-contiguous
        runner = self._by_regime.get(regime) or self._runner(regime)
        return runner.run(matrix, out, None if self.allow_nonfinite else self._check_rows)

    def predict(self, x: Any, out: np.ndarray | None = None) -> Any:
        """Predict targets for rows of raw features; returns the same kind as given (array, DataFrame, list).

        Every call returns a new array unless ``out`` (float32, shape (rows, n_targets)) is given for numpy
        input, which is then filled and returned (when a NaN/inf row is refused, rows before it may already
        be written there). A CUDA array (DLPack) on a CUDA session is run where it
        lies and answered with an OrtValue on the GPU."""
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
            return run_on_device(self._session, self.input_name, self.output_name, x, self.n_features,
                                 device[1])
        if out is not None and not isinstance(x, np.ndarray):
            raise InputError("out is only accepted with numpy input", parameter="out")
        if isinstance(x, (list, tuple)) and len(x) == 0:
            return []
        return answer_like(x, self._predict_array(self._as_array(x), out), self.target_names)

    def self_check(self) -> SelfCheck:
        """Run the bundle's golden cases (rows kept at export with their float64 answers) through this
        Predictor, on its providers, as one batch and in batches of up to 64 rows, and through every other
        regime of its plan (so every graph it runs is checked); raise ParityError naming the worst element
        when an answer is further from its float64 value than the export's parity bound allows. A bundle
        without golden cases (written by an older torchport, or a bare .onnx file) is not checked: the
        result says so."""
        if self._golden is None:
            return SelfCheck(False, 0, self.providers, "this model has no golden cases (a bundle written before "
                             "torchport kept them, or a bare .onnx file): nothing was checked")
        golden = load_golden(self._golden, self.feature_names, self.target_names)
        regimes = [(regime.describe(), lambda x, r=regime: self._run_in(r, x, None) if len(x) else
                    np.empty((0, self.n_targets), np.float32)) for regime in self.plan.regimes()]
        return self_check(self.predict, golden, self.target_names, self.providers, regimes)

    def __repr__(self) -> str:
        return (f"Predictor(features={self.feature_names}, targets={self.target_names}, "
                f"providers={self.providers})")


def _unpickle(model_bytes: bytes, source: str, names: tuple, providers, threads, large_rows,
              large_bytes: bytes | None = None, plan: dict | str | None = None) -> Predictor:
    predictor = Predictor.__new__(Predictor)
    predictor.signed_by = None
    (predictor.manifest, predictor.feature_names, predictor.target_names, predictor.input_name,
     predictor.output_name, predictor.allow_nonfinite, predictor._golden) = names
    predictor._open(model_bytes, large_bytes, Path(source), providers, None, threads, large_rows)
    if plan is not None:
        predictor._take_plan(Plan.from_json(plan) if isinstance(plan, dict) else plan)
    return predictor
