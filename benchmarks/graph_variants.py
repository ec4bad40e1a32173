"""What limits ONNX Runtime at large batches: the same one-feature affine model written as different graphs.

Builds, from the weight and bias of a bundle's one-feature linear model, graphs that compute the same
x * w + b (Gemm, Mul+Add with rank-2 or rank-0 constants, ...) and times each (a plain
InferenceSession.run with default options but the thread count) against the numpy copy floor and numpy's
own two-pass x * w + b, interleaved after warm-up, in one run. If the graphs differ from each other far
more than from the floor, the graph, not the way it is run, is what sets the speed. Needs the `train` extra
(onnx). Prints a table and saves the figures, with the machine, as JSON.

examples:
  python -m torchport.benchmarks.graph_variants --bundle bundles/seed
  python -m torchport.benchmarks.graph_variants --bundle bundles/seed --rows 1000000 --rounds 3 --threads 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from torchport.benchmarks.machine import environment
from torchport.benchmarks.timing import RESULTS_DIR, interleaved, rates
from torchport.runtime.bundle import ONNX_FILE, Bundle
from torchport.runtime.errors import BundleError, InputError
from torchport.runtime.files import write_json
from torchport.runtime.options import positive_int
from torchport.runtime.providers import CPU
from torchport.runtime.sessions import session_options

DEFAULT_JSON = RESULTS_DIR / "graph_variants.json"
FLOOR = "numpy copy (floor)"


def affine_graph(nodes: list, constants: dict[str, np.ndarray]) -> bytes:
    graph = helper.make_graph(
        nodes, "affine", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("targets", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(v, k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def variants(bundle: Bundle) -> tuple[dict[str, bytes], float, float]:
    """The bundle's own graph and rewrites of it; also its weight and bias."""
    model = onnx.load_from_string(bundle.read(ONNX_FILE))
    ops = [n.op_type for n in model.graph.node]
    if ops not in (["Gemm"], ["Mul", "Add"]):
        raise InputError(f"{bundle.path}: expected the seed's one-feature linear model (model.onnx as one Gemm, "
                         f"or as Mul+Add in bundles from an earlier torchport); got {ops}", parameter="bundle")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = model.graph.node
    names = nodes[0].input[1:3] if ops == ["Gemm"] else (nodes[0].input[1], nodes[1].input[1])
    w, b = (float(inits[n].ravel()[0]) for n in names)
    f32 = lambda v, shape: np.full(shape, v, dtype=np.float32)  # noqa: E731
    node = helper.make_node
    flat, col = np.array([-1], np.int64), np.array([-1, 1], np.int64)
    gemm = affine_graph([node("Gemm", ["features", "w", "b"], ["targets"], transB=1)],
                        {"w": f32(w, (1, 1)), "b": f32(b, (1,))})
    return {
        f"{'+'.join(ops)} (as exported)": model.SerializeToString(),
        "Gemm": gemm,
        "Mul+Add, [1,1] constants": affine_graph(
            [node("Mul", ["features", "w"], ["t"]), node("Add", ["t", "b"], ["targets"])],
            {"w": f32(w, (1, 1)), "b": f32(b, (1, 1))}),
        "Mul+Add, rank-0 constants": affine_graph(
            [node("Mul", ["features", "w"], ["t"]), node("Add", ["t", "b"], ["targets"])],
            {"w": f32(w, ()), "b": f32(b, ())}),
        "Reshape,Mul,Add,Reshape (rank 1)": affine_graph(
            [node("Reshape", ["features", "flat"], ["f"]), node("Mul", ["f", "w"], ["t"]),
             node("Add", ["t", "b"], ["u"]), node("Reshape", ["u", "col"], ["targets"])],
            {"flat": flat, "col": col, "w": f32(w, ()), "b": f32(b, ())}),
        "MatMul+Add": affine_graph(
            [node("MatMul", ["features", "w"], ["t"]), node("Add", ["t", "b"], ["targets"])],
            {"w": f32(w, (1, 1)), "b": f32(b, (1,))}),
    }, w, b


def measure(bundle: Bundle, rows: int, rounds: int, threads: int) -> dict[str, float]:
    """Rows/s of every graph and of the numpy baselines on ``rows`` rows (each graph checked first)."""
    graphs, w, b = variants(bundle)
    x = np.random.default_rng(0).uniform(0, 5, size=(rows, 1)).astype(np.float32)
    dst = np.empty_like(x)
    expected = x[:4096] * np.float32(w) + np.float32(b)
    candidates = {FLOOR: lambda: np.copyto(dst, x),
                  "numpy x*w+b, two passes": lambda: (np.multiply(x, np.float32(w), out=dst),
                                                      np.add(dst, np.float32(b), out=dst))}
    for name, model_bytes in graphs.items():
        session = ort.InferenceSession(model_bytes, session_options(threads, tuned=False), providers=[CPU])
        np.testing.assert_allclose(session.run(None, {"features": x[:4096]})[0], expected, rtol=1e-6, atol=1e-6)
        candidates[name] = lambda s=session: s.run(None, {"features": x})
    interleaved(candidates, 2, 1)  # warm-up
    return rates(interleaved(candidates, rounds, 1), rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchport.benchmarks.graph_variants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("bundles/seed"),
                        help="a bundle of a one-feature linear model (default: bundles/seed)")
    parser.add_argument("--rows", type=positive_int, default=16_000_000, help="rows per call (default: 16000000)")
    parser.add_argument("--rounds", type=positive_int, default=9, help="interleaved rounds (default: 9)")
    parser.add_argument("--threads", type=positive_int, default=1, help="intra-op threads of every session (default: 1)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="FILE",
                        help=f"where to save the figures (default: {DEFAULT_JSON}, relative to the current directory)")
    args = parser.parse_args(argv)
    try:
        rate = measure(Bundle.open(args.bundle), args.rows, args.rounds, args.threads)
    except (BundleError, InputError) as e:
        print(f"graph_variants: error: {e}", file=sys.stderr)
        return 2
    floor = rate[FLOOR]
    print(f"{args.rows:,} rows, one feature; {args.threads} intra-op thread(s); onnxruntime {ort.__version__}")
    print(f"{'graph':36s} {'Mrows/s':>9s} {'of floor':>9s}")
    for name, r in rate.items():
        print(f"{name:36s} {r / 1e6:9.1f} {r / floor:9.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.json, {"benchmark": "graph_variants", "rows": args.rows, "rounds": args.rounds,
                           "threads": args.threads, "environment": environment({"intra_op_threads": args.threads}).to_json(),
                           "rows_per_s": rate, "of_floor": {k: r / floor for k, r in rate.items()}})
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
