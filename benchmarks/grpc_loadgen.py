"""The gRPC counterpart of ``loadgen``: ``concurrency`` coroutines of the stock ``tritonclient.grpc.aio``
client on one channel, each sending its next ModelInfer as soon as the previous answer is in, until
``count`` requests are done or ``time_limit_s`` passes. What it measures includes the client's own cost
(tritonclient builds each request message in Python), the same for every server it is pointed at."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from torchport.benchmarks.loadgen import LoadResult


def one_row_inputs(values: np.ndarray, name: str = "features") -> list[InferInput]:
    """One prepared one-row FP32 input per value (sent as raw_input_contents)."""
    inputs = []
    for v in values:
        tensor = InferInput(name, [1, 1], "FP32")
        tensor.set_data_from_numpy(np.array([[v]], dtype=np.float32))
        inputs.append(tensor)
    return inputs


def first_value(response) -> float:
    """The first output value of a ModelInferResponse, from raw_output_contents or the tensor's contents."""
    if response.raw_output_contents:
        return float(np.frombuffer(response.raw_output_contents[0], dtype="<f4")[0])
    return float(response.outputs[0].contents.fp32_contents[0])


async def run_grpc_load(url: str, model: str, inputs: list[InferInput], check: Callable[[int, float], bool],
                        concurrency: int, count: int, time_limit_s: float) -> LoadResult:
    """Send ``count`` ModelInfer requests (cycling through ``inputs``) from ``concurrency`` coroutines;
    ``check(i, value)`` says whether the answer to request ``i`` is right."""
    client = grpcaio.InferenceServerClient(url)
    result = LoadResult()
    counter = iter(range(count))
    deadline = time.perf_counter() + time_limit_s

    async def worker() -> None:
        for i in counter:
            if time.perf_counter() > deadline:
                break
            result.sent += 1
            t0 = time.perf_counter_ns()
            try:
                answer = await client.infer(model, [inputs[i % len(inputs)]])
            except InferenceServerException as e:
                result.errors += 1
                result.first_error = result.first_error or f"{e.status()}: {e.message()}"
                continue
            result.latencies_ns.append(time.perf_counter_ns() - t0)
            if check(i, first_value(answer.get_response())):
                result.ok += 1
            else:
                result.wrong += 1
                result.first_error = result.first_error or f"wrong answer: {answer.get_response()}"

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - started
    finally:
        await client.close()
    return result
