"""Graph rewrites for the exported ONNX model: each computes the same function, faster for large batches.

ONNX Runtime's Gemm kernel is compute-bound when the inner dimension is 1 (the seed's one-feature linear
model), while an elementwise Mul then Add with [1, n] constants runs near memory speed; the exporter writes
the rewritten copy as the bundle's model.large_batch.onnx (docs/hot-path.md has the figures)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _attr(node: onnx.NodeProto, name: str, default: float | int) -> float | int:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def gemm_k1_to_mul_add(model: onnx.ModelProto) -> int:
    """Replace every ``Gemm(A, B, C)`` whose inner dimension is 1 (A is (rows, 1)) by ``Mul(A, w) + c``,
    with w and c constant (1, n) rows; in place. Only plain Gemms (alpha = beta = 1, A not transposed, B and
    C initializers) are touched. Returns how many nodes were rewritten."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    rewritten, nodes = 0, []
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "Gemm" else None
        bias = inits.get(node.input[2]) if weight is not None and len(node.input) == 3 else None
        plain = (_attr(node, "alpha", 1.0) == 1.0 and _attr(node, "beta", 1.0) == 1.0
                 and _attr(node, "transA", 0) == 0)
        if weight is None or bias is None or not plain or len(weight.dims) != 2:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight)
        if _attr(node, "transB", 0):
            w = w.T  # now (K, N)
        b = numpy_helper.to_array(bias)
        n = w.shape[1]
        if w.shape[0] != 1 or b.shape not in ((), (1,), (n,), (1, 1), (1, n)) or w.dtype != np.float32 \
                or b.dtype != np.float32:
            nodes.append(node)
            continue
        out = node.output[0]
        w_name, b_name, t_name = f"{out}_k1_weight", f"{out}_k1_bias", f"{out}_k1_product"
        graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(w.reshape(1, n)), w_name),
                                  numpy_helper.from_array(np.broadcast_to(b.reshape(1, -1), (1, n)).copy(), b_name)])
        nodes += [helper.make_node("Mul", [node.input[0], w_name], [t_name], name=f"{node.name}_mul"),
                  helper.make_node("Add", [t_name, b_name], [out], name=f"{node.name}_add")]
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for n in graph.node for name in (*n.input, *n.output)}
        for field in (graph.initializer, graph.value_info):
            keep = [v for v in field if v.name in used]
            del field[:]
            field.extend(keep)
    return rewritten
