"""One trainer per output directory: `torchport train` takes <out>.lock before training; a second run on the
same --out fails at once naming the first; a lock left by a killed run is found stale and taken over."""
import json
import os
import signal
import subprocess
import time

from conftest import BIN, run_cli, with_default_signals
from torchport.runtime import InputError
from torchport.runtime.locks import OutputLock


def start_training(out, *args):
    """A long `torchport train` (the tutorial's SGD for many epochs) that has taken its lock."""
    proc = subprocess.Popen(with_default_signals([BIN / "torchport", "train", "--out", out, "--no-progress",
                                                  "--no-plots", "--epochs", "20000000", *args]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = out.parent / f"{out.name}.lock"
    deadline = time.monotonic() + 240
    while not (lock.exists() and lock.stat().st_size):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the first run did not take its lock"
        time.sleep(0.05)
    return proc, lock


def test_a_second_trainer_on_the_same_output_fails_at_once(tmp_path):
    out = tmp_path / "seed"
    first, lock = start_training(out)
    try:
        holder = json.loads(lock.read_text())
        assert holder["pid"] == first.pid and holder["what"] == "torchport train"
        second = run_cli("train", "--out", str(out), "--no-progress", "--no-plots")
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"torchport train: error: {out} is being written by another torchport train (pid {first.pid} on " \
               in second.stderr and "wait for it to finish, or stop it" in second.stderr
        assert first.poll() is None  # it failed while the first still trains: it did not wait, nor train itself
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert not lock.exists()  # released on the way out


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    out = tmp_path / "seed"
    first, lock = start_training(out)
    first.kill()  # SIGKILL: no chance to clean up
    first.communicate(timeout=60)
    assert lock.exists()
    proc = run_cli("train", "--out", str(out), "--no-progress", "--no-plots", "--force")
    assert proc.returncode == 0, proc.stderr
    assert f"note: took over the lock {lock} left by a run that was killed (torchport train (pid {first.pid} on" \
           in proc.stderr
    assert out.is_dir() and not lock.exists()


def test_the_lock_in_process(tmp_path):
    target = tmp_path / "deep" / "out"
    with OutputLock(target, "a test") as lock:
        assert lock.stale is None and lock.path == tmp_path / "deep" / "out.lock"
        with OutputLock(target) as again:  # the same process may take it again (train, then export)
            assert again is lock
        assert lock.path.exists()
        code = (f"from torchport.runtime.locks import OutputLock; OutputLock({str(target)!r}).acquire()")
        other = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True)
        assert other.returncode == 1 and "is being written by another a test (pid" in other.stderr
    assert not (tmp_path / "deep").exists()  # the folder made for the lock is gone with it
    assert os.listdir(tmp_path) == []
    assert issubclass(InputError, ValueError)
