"""Fast full-batch SGD for a linear model with MSE loss: the seed's training loop without autograd or a host
sync per epoch. With the closed-form gradient 2/(n t) A^T (A theta - y), where A = [X, 1] and theta = [W^T; b],
one SGD step is the affine map theta <- M theta + d with M = I - a A^T A and d = a A^T y (a = 2 lr / (n t)), so
an epoch is a single fused matrix op on a (features + 1) x targets state, whatever the number of rows."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

# The state and the loss are kept in float64: the iterates then differ from the seed's float32 loop only by
# that loop's own rounding, and the loss formula below does not cancel.
STATE_DTYPE = torch.float64


def _design(X: torch.Tensor, bias: bool) -> torch.Tensor:
    A = X.to(STATE_DTYPE)
    return torch.cat([A, torch.ones(len(A), 1, dtype=STATE_DTYPE, device=A.device)], dim=1) if bias else A


def _capture(step: torch.Tensor, shift: torch.Tensor, states: torch.Tensor, m: int) -> "torch.cuda.CUDAGraph":
    """A CUDA graph of m epochs (states[k + 1] = step @ states[k] + shift), warmed up on a side stream."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for k in range(m):
            torch.addmm(shift, step, states[k], out=states[k + 1])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for k in range(m):
            torch.addmm(shift, step, states[k], out=states[k + 1])
    return graph


def fit_full_batch_sgd(module: nn.Linear, X: torch.Tensor, y: torch.Tensor, lr: float, epochs: int, *,
                       check_every: int | None = None, on_check: Callable[[int, float], None] | None = None,
                       cuda_graph: bool = False, theta0: torch.Tensor | None = None,
                       on_state: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Train ``module`` in place exactly as ``epochs`` steps of torch.optim.SGD(lr) on nn.MSELoss over the
    full batch would; returns the per-epoch losses (float32, the loss before each step, as the seed logs it).

    Every ``check_every`` epochs and at the end, ``on_check(epochs_done, loss)`` gets the latest loss: the only
    host syncs of the run (the caller's progress bar and divergence check go there). On a CUDA device,
    ``cuda_graph`` replays each interval's epochs as one captured CUDA graph.
    For checkpoints, ``on_state(epochs_done, theta, losses)`` gets the exact float64 state ([W^T; b]) and the
    losses so far at each check,
    and ``theta0`` resumes from such a state instead of the module's float32 weights."""
    if not isinstance(module, nn.Linear):
        raise TypeError(f"fit_full_batch_sgd trains an nn.Linear; got {type(module).__name__}")
    if y.ndim != 2 or X.ndim != 2 or len(X) != len(y) or y.shape[1] != module.out_features \
            or X.shape[1] != module.in_features:
        raise ValueError(f"expected X (rows, {module.in_features}) and y (rows, {module.out_features}); "
                         f"got X {tuple(X.shape)} and y {tuple(y.shape)}")
    dev = module.weight.device
    has_bias = module.bias is not None
    n, t = y.shape
    with torch.no_grad():
        A = _design(X.to(dev), has_bias)
        Y = y.to(dev, STATE_DTYPE)
        gram, cross, yy = A.T @ A, A.T @ Y, (Y * Y).sum()
        a = 2.0 * lr / (n * t)
        step = torch.eye(len(gram), dtype=STATE_DTYPE, device=dev) - a * gram
        shift = a * cross
        theta = module.weight.detach().T.to(STATE_DTYPE)
        if has_bias:
            theta = torch.cat([theta, module.bias.detach().to(STATE_DTYPE)[None]], dim=0)
        if theta0 is not None:
            theta = theta0.to(dev, STATE_DTYPE).reshape(theta.shape)
        chunk = max(1, min(check_every or 1024, epochs))
        states = torch.empty(chunk + 1, *theta.shape, dtype=STATE_DTYPE, device=dev)
        losses = torch.empty(epochs, dtype=module.weight.dtype, device=dev)
        states[0] = theta
        graph = _capture(step, shift, states, chunk) if cuda_graph and dev.type == "cuda" else None
        done = 0
        while done < epochs:
            m = min(chunk, epochs - done)
            if graph is not None and m == chunk:
                graph.replay()
            else:
                for k in range(m):
                    torch.addmm(shift, step, states[k], out=states[k + 1])
            seen = states[:m]
            quad = (seen * (gram @ seen)).sum(dim=(1, 2)) - 2.0 * (seen * cross).sum(dim=(1, 2))
            losses[done:done + m] = (quad + yy) / (n * t)
            done += m
            states[0] = states[m]
            if on_state is not None:
                on_state(done, states[0].clone(), losses[:done])
            if on_check is not None:
                on_check(done, float(losses[done - 1]))
        theta = states[0]
        module.weight.copy_(theta[:module.in_features].T)
        if has_bias:
            module.bias.copy_(theta[module.in_features])
    return losses
