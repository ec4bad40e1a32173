"""The engine under the Predictor: runs a batch of one model in any regime (docs/hot-path.md). It holds the
graph files' bytes and their sha256, a session per (graph, threads, spin), pooled bound slots and zero-copy
runners per regime, the golden cases' bytes, and the rules' regimes; the Predictor, tuning, verify and the
benchmarks all use it through this public interface."""
from __future__ import annotations

import json
import math
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from torchport.runtime import hot_path
from torchport.runtime.bundle import LARGE_BATCH_FILE, ONNX_FILE, THREADED_FILE, Manifest, sha256_bytes
from torchport.runtime.errors import BundleError, InputError
from torchport.runtime.hot_path import SLOT_ROWS
from torchport.runtime.inputs import refuse_nonfinite
from torchport.runtime.cpus import Neighbours
from torchport.runtime.plan import CUSTOM, OPENVINO, Plan, Regime, Step, flops_per_row, merged
from torchport.runtime.sessions import session_options

_CPU = "CPUExecutionProvider"
# A bf16 plan's answers are held to this many times the largest error measured on the golden cases (rows
# other than those may round a little further).
BF16_MARGIN = 2.0
_ORT_TYPES = {np.dtype(np.float32): "tensor(float)", np.dtype(np.float64): "tensor(double)"}
_finite = hot_path.finite


class Engine:
    """Runs numpy batches of one model in a given ``Regime``, making each session, slot pool and runner on
    first use. ``graphs`` maps file names (``model.onnx``, and ``model.large_batch.onnx`` and
    ``model.threaded.onnx`` when there are)
    to their checked bytes; ``providers`` are the ONNX Runtime providers asked for; ``sess_options`` replaces
    every session with one on ``model.onnx`` built from the caller's options. Names come from ``manifest``,
    else from the graph's torchport metadata, else x0.., y0..; every session's inputs and outputs are checked
    against them. ``precision``: "f32", or "bf16" for rules that run an MLP's batches past the small ones
    in bf16 through OpenVINO (asked for only). Multi-threaded regimes run on one thread while other
    processes hold the CPUs their threads need (``neighbours``, ``calm``). Safe to share between threads.

    ``first_session`` is the session made at once (the small batches' one); ``providers`` what it really
    uses; ``slot_rows`` the most rows a pooled slot holds. ``sessions`` (by graph, threads and spin),
    ``slot_sets`` and ``runners`` (by regime) hold what was made so far: read them; ``session``, ``slots``
    and ``runner`` make them."""

    def __init__(self, graphs: dict[str, bytes], source: Path, providers: list[str], *,
                 manifest: Manifest | None = None, golden: bytes | None = None,
                 sess_options: ort.SessionOptions | None = None, intra_op_threads: int = 1,
                 large_batch_rows: int = hot_path.LARGE_ROWS, precision: str = "f32"):
        self.graphs, self.source, self.requested = dict(graphs), source, list(providers)
        self.manifest, self.golden, self.custom = manifest, golden, sess_options is not None
        self.intra_op_threads, self.large_batch_rows = intra_op_threads, large_batch_rows
        self.precision = precision
        if manifest is None and (LARGE_BATCH_FILE in self.graphs or THREADED_FILE in self.graphs):
            raise BundleError(f"{LARGE_BATCH_FILE} and {THREADED_FILE} are run only from a bundle: give its manifest")
        # what the graphs take and answer: float32, or float64 where the manifest's precision says so
        self.dtype = np.dtype(manifest.dtype if manifest is not None else np.float32)
        if manifest is not None:
            self._name(list(manifest.features), list(manifest.targets), manifest.input.name, manifest.output.name)
        # The large-batch graph runs small batches too unless its rewrite adds nodes (the seed's Mul+Add
        # costs more per call than its one Gemm); MLPs then run one graph at every size.
        rewrite = manifest.export.large_batch_graph if manifest is not None else None
        small_on_large = LARGE_BATCH_FILE in self.graphs and rewrite is not None \
            and "gemm_k1_to_mul_add" not in rewrite.rewrites
        self.first_graph = LARGE_BATCH_FILE if small_on_large else ONNX_FILE
        self.first_session = self._new_session(sess_options or session_options(1, arena=self._mlp()),
                                               self.first_graph)
        self.sessions = {(self.first_graph, CUSTOM if self.custom else 1, False): self.first_session}
        self.providers = self.first_session.get_providers()
        if manifest is None:
            self._names_from_graph()
        self._check_io(self.first_session, self.source_of(self.first_graph))
        self.slot_rows = hot_path.slot_rows(self.n_features, self.n_targets)
        self.slot_sets: dict[Regime, hot_path.Slots] = {}
        self.runners: dict[Regime, hot_path.Runner] = {}
        self.neighbours = Neighbours()
        self._calm: dict[tuple[Regime, bool], Regime] = {}
        self._lock = threading.Lock()

    def source_of(self, graph: str) -> Path:
        """Where ``graph`` was read from (for messages)."""
        return self.source if graph == ONNX_FILE else self.source.parent / graph

    def graph_digests(self) -> tuple[str, ...]:
        """The sha256 of each graph file this engine may run, in file-name order ("name:digest")."""
        return tuple(f"{name}:{sha256_bytes(self.graphs[name])}" for name in sorted(self.graphs))

    @property
    def widest(self) -> int:
        """Values a row of the graph's widest layer holds (inputs, hidden layers, outputs), from the
        manifest's model spec; a bare .onnx file counts its inputs and outputs only."""
        hidden = (self.manifest.model.get("hidden") or []) if self.manifest is not None else []
        return max([self.n_features, self.n_targets, *(h for h in hidden if isinstance(h, int))])

    def flops_per_row(self) -> int | None:
        """The model's multiply-adds per row (2 FLOP each), from the manifest; None when unknown."""
        model = self.manifest.model if self.manifest is not None else {}
        hidden = tuple(h for h in (model.get("hidden") or ()) if isinstance(h, int))
        return flops_per_row(model.get("kind", ""), self.n_features, self.n_targets, hidden)

    def _mlp(self) -> bool:
        """True for a graph with hidden layers wider than its inputs and outputs, or without a large-batch
        graph: such graphs run large batches in cache-sized chunks."""
        return LARGE_BATCH_FILE not in self.graphs or self.widest > max(self.n_features, self.n_targets)

    def _cpu(self) -> bool:
        return self.providers[0] == _CPU

    def openvino_unavailable(self, precision: str = "f32") -> str | None:
        """Why OpenVINO cannot run this engine's graphs in ``precision`` (None when it can): float32 graphs on
        the CPU only, with the ``openvino`` extra installed (looked up without importing it)."""
        from torchport.runtime.openvino_runner import INSTALL, bf16_unavailable, installed
        if self.custom:
            return "the Predictor was made with sess_options (one ONNX Runtime session)"
        if not self._cpu():
            return f"OpenVINO runs here on the CPU only, and this Predictor runs on {self.providers[0]}"
        if self.dtype != np.float32:
            return "the graph computes in float64; OpenVINO runs float32 graphs only"
        if not installed():
            return f"openvino is not installed ({INSTALL})"
        return bf16_unavailable() if precision == "bf16" else None

    def openvino(self, graph: str, hint: str = "LATENCY", precision: str = "f32") -> Regime:
        """OpenVINO running ``graph`` whole with ``hint`` in ``precision``, on ``intra_op_threads`` threads."""
        return Regime(graph, self.intra_op_threads, runtime=OPENVINO, hint=hint, precision=precision)

    def on_onnxruntime(self, regime: Regime) -> Regime:
        """The ONNX Runtime regime that stands in for an OpenVINO one where OpenVINO cannot run: the same graph
        whole on the same threads (its threads sleeping between runs)."""
        return self.whole(regime.graph, regime.threads) if regime.openvino else regime

    def runnable(self, plan: Plan) -> Plan:
        """``plan`` as it can run here: each OpenVINO regime OpenVINO cannot run replaced by its ONNX Runtime
        stand-in, with a note saying so (a reduced-precision plan cannot run without OpenVINO: InputError)."""
        wanted = [r for r in plan.regimes() if r.openvino]
        if not wanted:
            return plan
        from torchport.runtime.openvino_runner import unavailable
        why = {p: self.openvino_unavailable(p) or unavailable() for p in {r.precision for r in wanted}}
        if not any(why.values()):
            return plan
        if why.get("bf16"):
            raise InputError(f"this plan runs in bf16 through OpenVINO, which cannot run here: {why['bf16']}; "
                             "use a float32 plan (precision='f32')", parameter="plan")
        steps = merged([Step(s.from_rows, self.on_onnxruntime(s.regime) if s.regime.openvino else s.regime)
                        for s in plan.steps])
        note = f"its OpenVINO steps run on ONNX Runtime: {why['f32']}"
        return replace(plan, steps=steps, notes=plan.notes + (note,))

    def held_to(self, plan: Plan) -> Plan:
        """``plan``, and for a bf16 plan what its answers are held to: each bf16 regime runs the golden cases
        whole; ``error`` is the largest difference from their float64 answers per target, ``bound`` the larger
        of the export's float32 bound and BF16_MARGIN times that error (self_check holds answers to it)."""
        if plan.precision == "f32":
            return plan
        from torchport.runtime.golden import load_golden
        if self.golden is None:
            raise InputError("reduced precision needs the bundle's golden cases to measure its error against "
                             "float64; re-export the bundle with this torchport", parameter="precision")
        golden = load_golden(self.golden, self.feature_names, self.target_names)
        error = np.zeros(self.n_targets)
        for regime in plan.regimes():
            if regime.precision != "f32" and len(golden.inputs):
                got = np.asarray(self.run(regime, golden.inputs, check=False, calm=False), np.float64)
                error = np.maximum(error, np.nan_to_num(np.abs(got - golden.answers), nan=np.inf).max(axis=0))
        bound = np.maximum(golden.bound, BF16_MARGIN * error)
        return replace(plan, error=tuple(map(float, error)), bound=tuple(map(float, bound)))

    def calm(self, regime: Regime, rows: int = 0) -> Regime:
        """What runs instead of a multi-threaded regime (intra-op threads, or chunks shared by several workers)
        while other processes hold the cores its threads need (``neighbours``): the same graph on one thread,
        its chunks one after another, so that no thread waits for a descheduled one (a bf16 OpenVINO step: the
        same step on one thread, so that its answers do not change with the load). The threaded graph's
        batches of ``rows`` from hot_path.CALM_THREADS_FROM_FLOP of arithmetic keep its threads, not spinning:
        a thread that sleeps while it waits gives its core back, and its short parallel parts kept the batch
        quicker than one thread beside busy processes."""
        threads_kept = regime.graph == THREADED_FILE and not regime.openvino and (self.flops_per_row() or 0) * rows \
            >= hot_path.CALM_THREADS_FROM_FLOP
        calm = self._calm.get((regime, threads_kept))
        if calm is None:
            if regime.openvino:  # a bf16 step stays bf16: answers must not change with the machine's load
                calm = self.whole(regime.graph, 1) if regime.precision == "f32" else replace(regime, threads=1)
            elif threads_kept:
                calm = replace(regime, spin=False)
            else:
                calm = replace(self.whole(self.one_thread(regime.graph), 1), chunk_rows=regime.chunk_rows,
                               chunk_from=regime.chunk_from)
            self._calm[regime, threads_kept] = calm
        return calm

    def rules(self) -> Plan:
        """The default plan, from the model's shape (the Predictor's docstring says what it does)."""
        if self.custom:
            return Plan((Step(1, Regime(ONNX_FILE, CUSTOM, bound=True)),
                         Step(SLOT_ROWS + 1, Regime(ONNX_FILE, CUSTOM))))
        first = self.first_graph
        large = LARGE_BATCH_FILE if LARGE_BATCH_FILE in self.graphs else ONNX_FILE
        threads = self.intra_op_threads
        steps = [Step(1, Regime(first, 1, bound=True))]
        if self._mlp():
            chunks = self.shared_chunks(large)
            chunks_from = chunks.chunk_from + 1 if chunks.chunk_rows else math.inf
            per_row = self.flops_per_row()
            threaded = self.threaded() == THREADED_FILE
            threaded_from = math.ceil(hot_path.THREADS_FROM_FLOP / per_row) if per_row and self._cpu() \
                and threads > 1 and (self.widest >= hot_path.THREADS_FROM_WIDTH or threaded) else math.inf
            if threaded and threaded_from < chunks_from and chunks.chunk_rows:  # whole on the threads for longer
                chunks_from = max(chunks_from, hot_path.THREADED_CHUNKS * chunks.chunk_rows + 1)
            bound_to = min(self.slot_rows, threaded_from - 1, chunks_from - 1)
            if bound_to > SLOT_ROWS and large != first:
                steps.append(Step(SLOT_ROWS + 1, Regime(large, 1, bound=True)))
            if max(bound_to, SLOT_ROWS) + 1 < min(threaded_from, chunks_from):
                steps.append(Step(max(bound_to, SLOT_ROWS) + 1, Regime(large, 1)))
            if max(threaded_from, SLOT_ROWS + 1) < chunks_from:
                steps.append(Step(max(threaded_from, SLOT_ROWS + 1), Regime(self.threaded(), threads, spin=True)))
            if chunks_from < math.inf:
                steps.append(Step(max(chunks_from, SLOT_ROWS + 1), chunks))
            if self.precision == "bf16":  # asked for: every batch past the small ones runs in bf16
                steps = [s for s in steps if s.from_rows <= SLOT_ROWS] + \
                    [Step(SLOT_ROWS + 1, self.openvino(large, "LATENCY", "bf16"))]
            return Plan(merged(steps), precision=self.precision)
        large_from = max(self.large_batch_rows, SLOT_ROWS + 1)
        bound_to = min(self.slot_rows, large_from - 1)
        if bound_to > SLOT_ROWS:
            steps.append(Step(SLOT_ROWS + 1, Regime(large, 1, bound=True)))
        if bound_to + 1 < large_from:
            steps.append(Step(bound_to + 1, self.whole(large, 1)))
        steps.append(Step(large_from, self.whole(large, threads, spin=threads > 1)))
        return Plan(merged(steps))

    def threaded(self) -> str:
        """The graph ONNX Runtime runs a whole batch of on several threads: ``model.threaded.onnx`` where the
        bundle has it (its MatMuls and Relus run on every thread; a Gemm's bias copy and fused Relu run on
        one), else the large-batch graph, else ``model.onnx``."""
        for graph in (THREADED_FILE, LARGE_BATCH_FILE):
            if graph in self.graphs:
                return graph
        return ONNX_FILE

    def one_thread(self, graph: str) -> str:
        """The graph that runs ``graph``'s batches on one thread: the large-batch graph for the threaded one
        (on one thread its Pad and unfused Relus only add work), else ``graph`` itself."""
        if graph == THREADED_FILE:
            return LARGE_BATCH_FILE if LARGE_BATCH_FILE in self.graphs else ONNX_FILE
        return graph

    def whole(self, graph: str, threads: int, spin: bool = False) -> Regime:
        """A zero-copy regime on ``graph``; a linear model's large-batch graph on the CPU runs inputs over
        CHUNK_FROM_BYTES in CHUNK_BYTES chunks (the Mul's output then stays in cache)."""
        if graph == LARGE_BATCH_FILE and not self._mlp() and self._cpu():
            width = self.dtype.itemsize * self.n_features
            return Regime(graph, threads, chunk_rows=max(1, hot_path.CHUNK_BYTES // width),
                          chunk_from=hot_path.CHUNK_FROM_BYTES // width, spin=spin)
        return Regime(graph, threads, spin=spin)

    def shared_chunks(self, graph: str) -> Regime:
        """Cache-sized chunks of ``graph`` on its one-thread session, shared by ``intra_op_threads`` threads
        (on the CPU; elsewhere the batch runs whole)."""
        if not self._cpu():
            return Regime(graph, 1)
        chunk = hot_path.cache_chunk_rows(self.widest, self.dtype.itemsize)
        return Regime(graph, 1, chunk_rows=chunk, chunk_from=2 * chunk - 1, workers=self.intra_op_threads)

    def check_plan(self, plan: Plan) -> None:
        """Raise InputError unless every regime of ``plan`` can run on this engine's graphs and sessions."""
        for regime in plan.regimes():
            if regime.graph not in self.graphs or (regime.threads == CUSTOM) != self.custom \
                    or regime.threads < 0 or regime.workers < 1 or regime.chunk_rows < 0 \
                    or (regime.openvino and (regime.bound or regime.hint not in ("LATENCY", "THROUGHPUT")
                                             or regime.threads < 1)):
                raise InputError(f"the plan's regime {regime.describe()!r} cannot run here: this Predictor runs "
                                 f"{', '.join(sorted(self.graphs))}", parameter="plan")
            if regime.precision not in ("f32", plan.precision) or \
                    (not regime.openvino and (regime.hint or regime.precision != "f32")):
                raise InputError(f"the plan's regime {regime.describe()!r} does not agree with the plan's precision "
                                 f"({plan.precision}): a reduced-precision step belongs to a plan that says so, run "
                                 "by OpenVINO; measure a plan with `torchport tune`", parameter="plan")

    def drop_slots(self) -> None:
        """Forget every slot pool (a new plan binds fresh ones on first use)."""
        self.slot_sets = {}

    def session(self, regime: Regime) -> ort.InferenceSession:
        """The session of ``regime``'s graph and thread count, made once on first use."""
        key = (regime.graph, regime.threads, regime.spin and regime.threads > 1)
        session = self.sessions.get(key)
        if session is None:
            with self._lock:
                session = self.sessions.get(key)
                if session is None:
                    options = session_options(regime.threads, arena=self._mlp(), spin=key[2])
                    session = self._new_session(options, regime.graph)
                    self._check_io(session, self.source_of(regime.graph))
                    self.sessions[key] = session
        return session

    def slots(self, regime: Regime) -> hot_path.Slots:
        """The slot pools of a bound ``regime``, made once on first use."""
        session = self.session(regime)
        with self._lock:
            slots = self.slot_sets.get(regime)
            if slots is None:
                slots = self.slot_sets[regime] = hot_path.Slots(session, self.input_name, self.output_name,
                                                                self.n_features, self.n_targets, self.dtype)
            return slots

    def runner(self, regime: Regime) -> hot_path.Runner:
        """The zero-copy runner of ``regime`` (of its zero-copy twin for a bound one), made once on first use;
        an OpenVINO regime's is an ``OpenVinoRunner``."""
        runner = self.runners.get(regime)
        if runner is None and regime.openvino:
            from torchport.runtime.openvino_runner import OpenVinoRunner
            with self._lock:
                runner = self.runners.get(regime)
                if runner is None:
                    runner = self.runners[regime] = OpenVinoRunner(self.graphs[regime.graph], regime.hint,
                                                                   regime.precision, regime.threads)
        if runner is None:
            session = self.session(regime)
            with self._lock:
                runner = self.runners.get(regime)
                if runner is None:
                    runner = hot_path.Runner(session, self.input_name, self.output_name, self.n_targets,
                                             regime.chunk_rows or None, regime.chunk_from, regime.workers,
                                             self.dtype)
                    self.runners[regime] = runner
        return runner

    def check_rows(self, a: np.ndarray, first_row: int = 0) -> None:
        """Raise naming the first NaN/inf cell of ``a`` (the graph's dtype, C-contiguous), rows counted from
        ``first_row``: one pass, a false alarm cleared by checking each element."""
        if a.size and not _finite(a):
            refuse_nonfinite(a, self.feature_names, first_row)

    def run(self, regime: Regime, x: np.ndarray, out: np.ndarray | None = None, check: bool = True,
            pools: dict | None = None, calm: bool = True) -> np.ndarray:
        """``x`` (rows >= 1, any numeric dtype and layout) run in ``regime``: through a pooled slot's bound
        buffers (one copy in, which converts dtype and layout too) or zero-copy from the graph's dtype, C-contiguous;
        into ``out`` when given. ``check``: refuse NaN/inf rows first. ``pools``: where to record the slot
        pool used, by input shape, so that a caller's own fast path (Predictor.predict's) finds it.
        ``calm``: a multi-threaded regime runs on one thread while other processes hold the CPUs (False:
        in the regime as given, for checks and measurements of the regime itself)."""
        rows = x.shape[0]
        if regime.bound and rows <= self.slot_rows:
            slots = self.slot_sets.get(regime) or self.slots(regime)
            pool = slots.pool(rows)
            if pool is not None:
                if pools is not None:
                    pools[rows, self.n_features] = pool
                try:
                    slot = pool.pop()
                except IndexError:
                    slot = slots.new(rows)
                inp, _, run, result, copy_out = slot
                try:
                    inp[...] = x
                    if check:
                        self.check_rows(inp)
                    run()
                    if out is None:
                        return copy_out()  # the slot serves later calls: never hand it out
                    out[...] = result
                    return out
                finally:
                    pool.append(slot)
        matrix = np.ascontiguousarray(x, dtype=self.dtype)  # no copy when already of the dtype, C-contiguous
        parallel = max(regime.threads, regime.workers)
        if parallel > 1 and calm and self.neighbours.crowded(parallel):
            regime = self.calm(regime, rows)
        runner = self.runners.get(regime) or self.runner(regime)
        return runner.run(matrix, out, self.check_rows if check else None)

    def _new_session(self, options: ort.SessionOptions, graph: str) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(self.graphs[graph], sess_options=options, providers=self.requested)
        except Exception as e:  # onnxruntime raises its own exception types for invalid models
            raise BundleError(f"{self.source_of(graph)} is not a model ONNX Runtime can load: {e}") from None

    def _name(self, features: list[str], targets: list[str], input_name: str, output_name: str) -> None:
        self.feature_names, self.target_names, self.input_name, self.output_name = \
            features, targets, input_name, output_name
        self.n_features, self.n_targets = len(features), len(targets)

    def _names_from_graph(self) -> None:
        """Input/output and column names of a bare .onnx file: from torchport's metadata, else x0.., y0.."""
        session = self.first_session
        inputs, outputs = session.get_inputs(), session.get_outputs()
        meta = session.get_modelmeta().custom_metadata_map
        n_in, n_out = inputs[0].shape[-1], outputs[0].shape[-1]
        features = json.loads(meta["torchport.features"]) if "torchport.features" in meta \
            else [f"x{i}" for i in range(n_in if isinstance(n_in, int) else 1)]
        targets = json.loads(meta["torchport.targets"]) if "torchport.targets" in meta \
            else [f"y{i}" for i in range(n_out if isinstance(n_out, int) else 1)]
        self._name(features, targets, inputs[0].name, outputs[0].name)
        self.dtype = np.dtype(np.float64 if inputs[0].type == _ORT_TYPES[np.dtype(np.float64)] else np.float32)

    def _check_io(self, session: ort.InferenceSession, source: Path) -> None:
        """Refuse a graph whose input and output names and widths disagree with the manifest's."""
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or inputs[0].name != self.input_name or inputs[0].shape[-1] != len(self.feature_names):
            raise BundleError(f"{source}: the graph's inputs {[(i.name, i.shape) for i in inputs]} disagree "
                              f"with the manifest ({self.input_name!r}, {len(self.feature_names)} features)")
        if outputs[0].name != self.output_name or outputs[0].shape[-1] != len(self.target_names):
            raise BundleError(f"{source}: the graph's outputs {[(o.name, o.shape) for o in outputs]} "
                              f"disagree with the manifest ({self.output_name!r}, {len(self.target_names)} targets)")
        expected = _ORT_TYPES.get(self.dtype)
        if inputs[0].type != expected or outputs[0].type != expected:
            if self.manifest is None:  # a bare .onnx file: its own input type chose the dtype
                raise BundleError(f"{source}: the graph takes {inputs[0].type} and answers {outputs[0].type}; "
                                  "torchport runs graphs that take and answer float32 (tensor(float)) or float64 "
                                  "(tensor(double)): export the model in one of them")
            raise BundleError(f"{source}: the graph takes {inputs[0].type} and answers {outputs[0].type}; the "
                              f"manifest says {self.dtype} ({expected}); re-export the bundle")
