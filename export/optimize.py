"""Graph rewrites for the exported ONNX model: each computes the same function, faster for large batches.

ONNX Runtime's Gemm kernel is compute-bound when the inner dimension is 1 (the seed's one-feature linear
model), while an elementwise Mul then Add with [1, n] constants runs near memory speed; and it runs the
broadcast Sub/Div/Mul/Add of the feature and target scaling slowly, while folded into the first and last
Gemm they cost nothing. The exporter writes the rewritten copy as the bundle's model.large_batch.onnx
(docs/hot-path.md has the figures); verify checks it against torch like model.onnx. An MLP's copy with
its hidden biases carried in a ones column (fold_hidden_biases) is model.threaded.onnx, for runs on
several threads."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))  # the dtypes torchport's graphs compute in


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
        if w.shape[0] != 1 or b.shape not in ((), (1,), (n,), (1, 1), (1, n)) or w.dtype not in FLOATS \
                or b.dtype != w.dtype:
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
        _prune(graph)
    return rewritten


# The input scaling (x - mean) / std is folded into the first layer only where no feature's mean is more than
# this many of its stds from zero: the folded bias holds W @ (mean / std), and float32 rounding of that sum
# grows with mean / std (raw-unit data such as Longley's year column would lose digits); otherwise only the
# division is folded and the subtraction stays.
FOLD_MAX_MEAN_OVER_STD = 64.0


def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in graph.node if name in n.input]


def _plain_gemm(node: onnx.NodeProto | None, inits: dict) -> bool:
    return (node is not None and node.op_type == "Gemm" and len(node.input) == 3 and node.input[1] in inits
            and node.input[2] in inits and _attr(node, "alpha", 1.0) == 1.0 and _attr(node, "beta", 1.0) == 1.0
            and _attr(node, "transA", 0) == 0)


def _gemm_weights(node: onnx.NodeProto, inits: dict) -> tuple[np.ndarray, np.ndarray]:
    """The Gemm's B as (K, N) and C as (N,), in float64."""
    w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    w = w.T if _attr(node, "transB", 0) else w
    b = np.broadcast_to(numpy_helper.to_array(inits[node.input[2]]).astype(np.float64).reshape(-1), (w.shape[1],))
    return w, b


def _set_gemm(graph: onnx.GraphProto, node: onnx.NodeProto, w: np.ndarray, b: np.ndarray, tag: str,
              dtype: np.dtype) -> None:
    """Point the Gemm at new (K, N) weights and (N,) bias, stored in ``dtype`` (the graph's), transB=0."""
    w_name, b_name = f"{node.output[0]}_{tag}_weight", f"{node.output[0]}_{tag}_bias"
    graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(w, dtype=dtype), w_name),
                              numpy_helper.from_array(np.ascontiguousarray(b, dtype=dtype), b_name)])
    node.input[1], node.input[2] = w_name, b_name
    for a in node.attribute:
        if a.name == "transB":
            a.i = 0


def _stored(node: onnx.NodeProto, inits: dict) -> np.dtype:
    """The dtype the Gemm's weights are stored in (float32, or float64 in a float64 graph)."""
    return numpy_helper.to_array(inits[node.input[1]]).dtype


def _const(inits: dict, name: str, n: int) -> np.ndarray | None:
    """An initializer broadcastable to (n,), in float64, or None."""
    if name not in inits:
        return None
    v = numpy_helper.to_array(inits[name]).astype(np.float64)
    return np.broadcast_to(v.reshape(-1), (n,)).copy() if v.size in (1, n) else None


def _fold_input(graph: onnx.GraphProto, inits: dict) -> int:
    """(x - mean) / std -> Gemm: the division (and the subtraction, where FOLD_MAX_MEAN_OVER_STD allows)
    into the Gemm's weights and bias. Returns the nodes removed."""
    x = graph.input[0].name
    sub = next((n for n in _consumers(graph, x) if n.op_type == "Sub" and n.input[0] == x), None)
    after = _consumers(graph, sub.output[0]) if sub is not None else []
    div = after[0] if len(after) == 1 and after[0].op_type == "Div" and after[0].input[0] == sub.output[0] else None
    after = _consumers(graph, div.output[0]) if div is not None else []
    gemm = after[0] if len(after) == 1 and after[0].input[0] == div.output[0] else None
    if not _plain_gemm(gemm, inits):
        return 0
    w, b = _gemm_weights(gemm, inits)
    mean, std = _const(inits, sub.input[1], w.shape[0]), _const(inits, div.input[1], w.shape[0])
    if mean is None or std is None or not np.all(np.isfinite(std)) or np.any(std == 0):
        return 0
    w = w / std[:, None]
    if np.max(np.abs(mean) / np.abs(std)) <= FOLD_MAX_MEAN_OVER_STD:
        b = b - mean @ w
        gemm.input[0] = x
        removed = [sub, div]
    else:
        gemm.input[0] = sub.output[0]
        removed = [div]
    _set_gemm(graph, gemm, w, b, "folded_in", _stored(gemm, inits))
    for node in removed:
        graph.node.remove(node)
    return len(removed)


def _fold_output(graph: onnx.GraphProto, inits: dict) -> int:
    """Gemm -> * std -> + mean (the graph's output): both into the Gemm. Returns the nodes removed."""
    y = graph.output[0].name
    add = next((n for n in graph.node if y in n.output), None)
    if add is None or add.op_type != "Add":
        return 0
    mul = next((n for n in graph.node if add.input[0] in n.output), None)
    if mul is None or mul.op_type != "Mul" or len(_consumers(graph, mul.output[0])) != 1:
        return 0
    gemm = next((n for n in graph.node if mul.input[0] in n.output), None)
    if not _plain_gemm(gemm, inits) or len(_consumers(graph, gemm.output[0])) != 1:
        return 0
    w, b = _gemm_weights(gemm, inits)
    std, mean = _const(inits, mul.input[1], w.shape[1]), _const(inits, add.input[1], w.shape[1])
    if std is None or mean is None:
        return 0
    _set_gemm(graph, gemm, w * std[None, :], b * std + mean, "folded_out", _stored(gemm, inits))
    gemm.output[0] = y
    graph.node.remove(mul)
    graph.node.remove(add)
    return 2


def fold_scaling(model: onnx.ModelProto) -> int:
    """Fold the exporter's feature scaling ((x - mean) / std before the first Gemm) and target scaling
    (* std + mean after the last) into those Gemms' weights, computed in float64 and stored in the graph's
    dtype; in place. ONNX Runtime runs these broadcasts slowly (about as long as the first two layers of the
    3-32-32-1 MLP together). Returns how many nodes were removed."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    removed = _fold_input(graph, inits) + _fold_output(graph, inits)
    if removed:
        _prune(graph)
    return removed


def _relu_after(graph: onnx.GraphProto, node: onnx.NodeProto) -> onnx.NodeProto | None:
    """The Relu that is the only consumer of ``node``'s output, or None."""
    after = _consumers(graph, node.output[0])
    return after[0] if len(after) == 1 and after[0].op_type == "Relu" else None


def fold_hidden_biases(model: onnx.ModelProto) -> int:
    """Carry a column of ones through the hidden layers so each hidden Gemm's bias becomes one more row of
    its weights: ``Relu(Gemm(a, W, b))`` -> ``Relu(MatMul([a, 1], [[W], [b]]))``, the ones column made by a
    Pad of the input (first layer) or by one more output unit of the layer before (weights 0, bias 1:
    Relu(1) = 1); in place. ONNX Runtime's Gemm copies the bias into the output and applies a fused Relu
    on one thread, serial work that held back its two-thread runs of wide layers; a MatMul and a Relu
    both run on every thread. The last Gemm (no Relu after it) keeps its bias. Returns the Gemms rewritten."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    widened: dict[str, onnx.NodeProto] = {}  # a Relu's output -> the layer that gives it the ones column
    rewritten = 0
    for node in list(graph.node):
        relu = _relu_after(graph, node) if _plain_gemm(node, inits) else None
        if relu is None:
            continue
        a = node.input[0]
        made_by = next((n for n in graph.node if a in n.output), None)
        if a not in widened and made_by is not None and made_by.op_type == "Relu":
            continue  # a hidden layer whose layer before was not folded: its input is not padded (a copy)
        w, b = _gemm_weights(node, inits)
        dtype = _stored(node, inits)
        if a in widened:
            _widen(graph, inits, widened[a])
        else:
            pads, one = f"{node.output[0]}_ones_pads", f"{node.output[0]}_ones_value"
            graph.initializer.extend([numpy_helper.from_array(np.array([0, 0, 0, 1], np.int64), pads),
                                      numpy_helper.from_array(np.array(1, dtype=dtype), one)])
            padded = f"{node.output[0]}_input_with_ones"  # one per layer: two layers may read the same input
            graph.node.insert(list(graph.node).index(node),
                              helper.make_node("Pad", [a, pads, one], [padded], name=f"{node.output[0]}_ones"))
            a = padded
        product = f"{node.output[0]}_with_bias"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(np.vstack([w, b]), dtype=dtype),
                                                         product))
        inits[product] = graph.initializer[-1]
        matmul = helper.make_node("MatMul", [a, product], [node.output[0]], name=f"{node.output[0]}_matmul")
        graph.node.insert(list(graph.node).index(node), matmul)
        graph.node.remove(node)
        nxt = _consumers(graph, relu.output[0])
        if len(nxt) == 1 and _plain_gemm(nxt[0], inits) and _relu_after(graph, nxt[0]) is not None:
            widened[relu.output[0]] = matmul
        rewritten += 1
    if rewritten:
        _prune(graph)
    return rewritten


def _widen(graph: onnx.GraphProto, inits: dict, matmul: onnx.NodeProto) -> None:
    """Give a folded layer (MatMul over [a, 1]) one more output unit that is always 1: a last column of
    weights that is 0 but for the ones row. Its outputs' recorded shapes are dropped (they changed)."""
    stored = inits[matmul.input[1]]
    w = numpy_helper.to_array(stored)
    column = np.zeros((w.shape[0], 1), w.dtype)
    column[-1, 0] = 1
    stored.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(np.hstack([w, column])), stored.name))
    changed = {matmul.output[0], *(n.output[0] for n in _consumers(graph, matmul.output[0]))}
    keep = [v for v in graph.value_info if v.name not in changed]
    del graph.value_info[:]
    graph.value_info.extend(keep)


def _prune(graph: onnx.GraphProto) -> None:
    """Drop initializers and value_info no node uses any more."""
    used = {name for n in graph.node for name in (*n.input, *n.output)}
    for field in (graph.initializer, graph.value_info):
        keep = [v for v in field if v.name in used]
        del field[:]
        field.extend(keep)
