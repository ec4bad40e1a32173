"""What limits ONNX Runtime at large batches: the same one-feature affine model written as different graphs.

Builds, from a bundle's Gemm weights, graphs that compute the same x * w + b and times each (plain
``InferenceSession.run``, one intra-op thread, the arena on) against the numpy copy floor and numpy's own
two-pass x * w + b, interleaved after warm-up. Needs the `train` extra (onnx).

  .venv/bin/python benchmarks/graph_variants.py --bundle bundles/seed [--rows 16000000] [--rounds 9]
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def affine_graph(nodes: list, constants: dict[str, np.ndarray]) -> bytes:
    graph = helper.make_graph(
        nodes, "affine", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("targets", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(v, k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def variants(bundle: Path) -> tuple[dict[str, bytes], float, float]:
    """The bundle's own graph and rewrites of it; also its weight and bias."""
    model = onnx.load(str(bundle / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    if ops not in (["Gemm"], ["Mul", "Add"]):
        raise SystemExit(f"{bundle}: expected the seed's one-feature linear model (model.onnx as one Gemm, "
                         f"or as Mul+Add in bundles from an earlier torchport); got {ops}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("bundles/seed"))
    parser.add_argument("--rows", type=int, default=16_000_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of every session")
    parser.add_argument("--json", type=Path, help="also save the figures here")
    args = parser.parse_args(argv)
    graphs, w, b = variants(args.bundle)
    x = np.random.default_rng(0).uniform(0, 5, size=(args.rows, 1)).astype(np.float32)
    dst = np.empty_like(x)
    expected = x[:4096] * np.float32(w) + np.float32(b)
    candidates = {"numpy copy (floor)": lambda: np.copyto(dst, x),
                  "numpy x*w+b, two passes": lambda: (np.multiply(x, np.float32(w), out=dst),
                                                      np.add(dst, np.float32(b), out=dst))}
    for name, model_bytes in graphs.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(session.run(None, {"features": x[:4096]})[0], expected, rtol=1e-6, atol=1e-6)
        candidates[name] = lambda s=session: s.run(None, {"features": x})
    for fn in candidates.values():
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in candidates}
    names = list(candidates)
    gc.disable()
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - t0)
    gc.enable()
    rate = {k: args.rows / float(np.median(v)) for k, v in times.items()}
    floor = rate["numpy copy (floor)"]
    print(f"{args.rows:,} rows, one feature; {args.threads} intra-op thread(s); onnxruntime {ort.__version__}")
    print(f"{'graph':36s} {'Mrows/s':>9s} {'of floor':>9s}")
    for name, r in rate.items():
        print(f"{name:36s} {r / 1e6:9.1f} {r / floor:9.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": args.rows, "threads": args.threads, "onnxruntime": ort.__version__,
                                         "rows_per_s": rate, "of_floor": {k: r / floor for k, r in rate.items()}},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
