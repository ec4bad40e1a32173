"""Loading that cannot hang or blow up, on a real poll-mode server over a repository of signed bundles: a
FIFO and a symbolic link to /dev/zero published as model.onnx of new versions are each refused with a log
line naming the model and version (the signature check passes first: the manifest is intact), while REST
and gRPC clients keep being answered by the version served before; another model's version published after
them loads; the server's peak memory stays small and SIGTERM ends it promptly. A version's load has a time
limit; and a version answers 404 until it can be served, then 200, never 500 in between, even when two
models change in the same poll."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest

from servers import Caller, infer_body, infer_json, request, serving
from torchport.export.triton import write_triton_repository
from torchport.runtime import Predictor
from torchport.runtime.signing import load_private_key, new_key, sign_bundle

POLL = 0.25
MAX_RSS_KB = 1_500_000


@pytest.fixture(scope="module")
def signed(model_versions, tmp_path_factory):
    """Every bundle of ``model_versions`` signed by a new key: ({(name, version): bundle}, public key file)."""
    folder = tmp_path_factory.mktemp("signed")
    private, public = new_key(folder / "key.pem")
    bundles = {}
    for (name, version), bundle in model_versions.items():
        bundles[name, version] = folder / f"{name}-{version}"
        shutil.copytree(bundle, bundles[name, version])
        sign_bundle(bundles[name, version], load_private_key(private))
    return bundles, public


def _publish(bundle, repo, name: str, version: int, model_onnx=None) -> None:
    """Build a version directory beside the repository and rename it in (an atomic publish); with
    ``model_onnx``, a function that puts something else where model.onnx was."""
    stage = repo.parent / f".stage-{name}-{version}"
    shutil.copytree(bundle, stage)
    if model_onnx is not None:
        (stage / "model.onnx").unlink()
        model_onnx(stage / "model.onnx")
    stage.rename(repo / name / str(version))


def _peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="needs a POSIX system")
def test_a_fifo_and_a_dev_zero_link_are_refused_and_nothing_waits_for_them(signed, tmp_path):
    bundles, public = signed
    repo = tmp_path / "repo"
    write_triton_repository(bundles["seed", "1"], repo, name="seed", version=1)
    write_triton_repository(bundles["mlp", "1"], repo, name="mlp", version=1)
    config = repo / "seed" / "config.pbtxt"  # every version wanted: each new one is tried, whatever came after
    config.write_text(config.read_text() + "version_policy: { all { } }\n")
    with serving(repo, "--model-control-mode", "poll", "--repository-poll-secs", str(POLL), "--trusted-keys",
                 str(public), grpc=True) as server:
        callers = [Caller(server, "seed"), Caller(server, "seed", grpc=True)]
        for c in callers:
            c.start()
        _publish(bundles["seed", "2"], repo, "seed", 2, os.mkfifo)
        _publish(bundles["seed", "2"], repo, "seed", 3, lambda path: path.symlink_to("/dev/zero"))
        server.wait_for_log("refused seed version 2", timeout=30)
        server.wait_for_log("refused seed version 3", timeout=30)
        write_triton_repository(bundles["mlp", "2"], repo, name="mlp", version=2)  # published after them
        server.wait_for_log("loaded mlp version 2", timeout=30)
        rows = np.array([[1.0, 2.0, 3.0]], np.float32)
        status, answer = infer_json(server, rows.tolist(), model="mlp", version="2")
        seed = infer_json(server, [[3.0]], model="seed")
        for c in callers:
            c.stop.set()
        for c in callers:
            c.join(30)
        peak_kb = _peak_rss_kb(server.proc.pid)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=30)
        stopped_s = time.monotonic() - signalled
        log = server.log
    refusals = [line for line in log.splitlines() if "refused seed version" in line]
    assert any("version 2" in line and "is a FIFO, not a regular file" in line for line in refusals), refusals
    assert any("version 3" in line and "is a character device, not a regular file" in line for line in refusals)
    assert all("versions 1 keep serving" in line for line in refusals), refusals
    assert status == 200 and np.allclose(answer["outputs"][0]["data"],
                                         Predictor(bundles["mlp", "2"]).predict(rows).ravel(), rtol=1e-6)
    assert seed[0] == 200 and seed[1]["model_version"] == "1"
    results = [(status, version) for c in callers for status, version, _ in c.results]
    assert results and all(r == (200, "1") for r in results), [r for r in results if r != (200, "1")][:5]
    assert peak_kb < MAX_RSS_KB, f"peak RSS {peak_kb} kB"
    assert code == 0 and stopped_s < 15, (code, stopped_s)
    print(f"{len(results)} requests answered by version 1 meanwhile; peak RSS {peak_kb / 1024:.0f} MB; "
          f"stopped {stopped_s:.1f} s after SIGTERM")


def test_a_load_past_its_time_limit_is_given_up(model_versions, tmp_path):
    repo = tmp_path / "repo"
    write_triton_repository(model_versions["seed", "1"], repo, name="seed", version=1)
    with serving(repo, "--model-control-mode", "explicit", "--load-model", "seed",
                 "--model-load-timeout-s", "0.001") as server:
        server.wait_for_log("refused seed version 1")
        ready = request(server, "GET", "/v2/models/seed/ready")[0]
        index = json.loads(request(server, "POST", "/v2/repository/index")[2])
        load = request(server, "POST", "/v2/repository/models/seed/load")
        log = server.log
    assert "loading took longer than 0.001 s (--model-load-timeout-s)" in log
    assert ready == 404 and index[0]["state"] == "UNAVAILABLE" and "took longer" in index[0]["reason"]
    error = json.loads(load[2])["error"]  # given up again, or its first load still runs
    assert load[0] == 400 and ("longer than 0.001 s" in error or "still running past the load time limit" in error)


def test_versions_answer_404_until_they_are_served_then_200(model_versions, tmp_path):
    """Two models get a new version in the same poll; clients ask for those versions from before they exist."""
    repo = tmp_path / "repo"
    write_triton_repository(model_versions["seed", "1"], repo, name="seed", version=1)
    write_triton_repository(model_versions["mlp", "1"], repo, name="mlp", version=1)
    seen: dict[str, list[int]] = {"seed": [], "mlp": []}
    stop = threading.Event()

    def call(server, name: str, rows: list) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        while not stop.is_set():
            conn.request("POST", f"/v2/models/{name}/versions/2/infer", infer_body(rows))
            response = conn.getresponse()
            response.read()
            seen[name].append(response.status)

    with serving(repo, "--model-control-mode", "poll", "--repository-poll-secs", "1") as server:
        threads = [threading.Thread(target=call, args=(server, "seed", [[3.0]])),
                   threading.Thread(target=call, args=(server, "mlp", [[1.0, 2.0, 3.0]]))]
        for t in threads:
            t.start()
        time.sleep(0.3)
        for name in ("seed", "mlp"):
            shutil.copytree(model_versions[name, "2"], repo.parent / f".{name}")
        for name in ("seed", "mlp"):
            (repo.parent / f".{name}").rename(repo / name / "2")
        server.wait_for_log("loaded seed version 2")
        server.wait_for_log("loaded mlp version 2")
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(30)
    for name, statuses in seen.items():
        first = statuses.index(200)
        assert set(statuses[:first]) == {404} and set(statuses[first:]) == {200}, (name, sorted(set(statuses)))
