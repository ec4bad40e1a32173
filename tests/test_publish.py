"""Publishing cannot lose a bundle or a scored file: `torchport train --force` killed (SIGKILL, by strace's
fault injection) at each of its renames in turn, and just after the swap, leaves a bundle that loads; the
next run removes what the killed one left, and a clean run leaves nothing. Where the system cannot swap in
one step, the two renames' leftovers are put back. Leftovers a live process holds are left alone."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BIN, run_cli, without_status
from torchport.runtime import Predictor
from torchport.runtime.bundle import Bundle
from torchport.runtime.files import discard_dir, leftover_names, remove_leftovers, staging_dir

STRACE = shutil.which("strace")
FAST = ("--optimizer", "exact", "--formats", "onnx", "--no-plots", "--no-progress")  # a whole run, quickly
RENAMES = ("rename", "renameat", "renameat2")
CALL = re.compile(r"^(?:(\d+)\s+)?(\w+)\((.*)$")  # a call's line (or its first, "<unfinished ...>")
RESULT = re.compile(r"\)\s+=\s+(-?\d+)")


@pytest.fixture(scope="module")
def old_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("publish") / "B"
    proc = run_cli("train", "--out", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    return out


def need_strace() -> None:
    if STRACE is None:
        if os.environ.get("CI"):
            pytest.fail("strace is missing: `make setup` installs it with apt-get (as CI runs it, as root)")
        pytest.skip("strace is not installed: apt-get install strace (`make setup` does, as root)")


def traced(args: tuple[str, ...], *options: str) -> subprocess.CompletedProcess:
    """`torchport ARGS` under strace with ``options`` (what to trace, where, what to inject)."""
    return subprocess.run([STRACE, "-f", "-qq", *options, str(BIN / "torchport"), *args], capture_output=True,
                          text=True, timeout=600)


def killed_at(args: tuple[str, ...], syscall: str, n: int, *options: str) -> None:
    """Run `torchport ARGS`, SIGKILLed as it enters its ``n``-th ``syscall``."""
    proc = traced(args, "-o", os.devnull, *options, "-e", f"inject={syscall}:signal=KILL:when={n}")
    assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), \
        f"not killed at {syscall} #{n} (exit {proc.returncode}): {proc.stderr}"


def calls(trace: str) -> list[tuple[int, str, str, int | None]]:
    """(thread, syscall, arguments, result if on the same line) of each call in an strace log, in order."""
    found = []
    for m in map(CALL.match, trace.splitlines()):
        if m:
            results = RESULT.findall(m[3])
            found.append((int(m[1] or 0), m[2], m[3], int(results[-1]) if results else None))
    return found


def kill_points(trace: str) -> list[tuple[str, int]]:
    """Where to kill a run like the traced one: as it starts removing the old tree after its last rename
    (first: a run that finds leftovers removes them with the same calls), then at each rename in turn (strace
    counts each syscall apart, per thread)."""
    points, counts, renaming_thread, after_last = [], {}, set(), None
    for thread, name, _, _ in calls(trace):
        counts[name] = counts.get(name, 0) + 1
        if name in RENAMES:
            points.append((name, counts[name]))
            renaming_thread.add(thread)
            after_last = None
        elif name == "unlinkat" and points and after_last is None:
            after_last = (name, counts[name])
    assert len(renaming_thread) == 1, "renames from several threads: strace counts them per thread"
    return [after_last] + points


def loadable(bundle: Path) -> bytes:
    """The bundle's manifest bytes, once every file checks against it and the Predictor answers."""
    opened = Bundle.open(bundle)
    for name in opened.manifest.files:
        opened.read(name)
    answer = Predictor(bundle, providers="cpu").predict(np.array([[3.0]], np.float32))
    assert np.isfinite(answer).all()
    return opened.manifest_bytes


def beside(path: Path) -> set[str]:
    """What is in ``path``'s folder besides it."""
    return set(os.listdir(path.parent)) - {path.name}


@pytest.mark.full
def test_train_force_killed_at_each_rename_leaves_the_bundle_loadable(old_bundle, tmp_path):
    need_strace()
    bundle = tmp_path / "out" / "B"
    shutil.copytree(old_bundle, bundle)
    train = ("train", "--out", str(bundle), "--force", *FAST)
    log = tmp_path / "trace.txt"
    clean = traced(train, "-o", str(log), "-e", "trace=rename,renameat,renameat2,unlinkat")
    assert clean.returncode == 0, clean.stderr
    assert beside(bundle) == set()  # a clean run leaves nothing beside the bundle
    trace = log.read_text()
    if sys.platform.startswith("linux"):
        assert "RENAME_EXCHANGE" in trace  # the swap in one step
    before, left, outcomes = loadable(bundle), set(), []
    for syscall, n in kill_points(trace):
        killed_at(train, syscall, n)
        now = beside(bundle) - {"B.lock"}  # the lock file of a killed run is taken over, not removed
        assert now and not now & left, f"killed at {syscall} #{n}: left {now}; the one before left {left}"
        after = loadable(bundle)
        outcomes.append("old" if after == before else "new")
        before, left = after, now
    assert outcomes[0] == "new" and set(outcomes[1:]) == {"old"}, outcomes  # killed after the swap: new
    proc = run_cli(*train)
    assert proc.returncode == 0, proc.stderr
    assert "left by a run that was killed" in proc.stderr and "took over the lock" in proc.stderr
    assert beside(bundle) == set()
    loadable(bundle)


@pytest.mark.full
def test_without_an_atomic_swap_a_bundle_killed_between_two_renames_is_put_back(old_bundle, tmp_path):
    """Where renameat2 refuses RENAME_EXCHANGE (here: strace makes it fail with EINVAL), the old bundle moves
    aside, the new one takes its name; killed in between, B is missing until the next run, `verify` or
    `serve` puts the old one back."""
    need_strace()
    bundle = tmp_path / "out" / "B"
    shutil.copytree(old_bundle, bundle)
    train = ("train", "--out", str(bundle), "--force", *FAST)
    no_swap = ("-e", "trace=rename,renameat,renameat2", "-e", "inject=renameat2:error=EINVAL")
    log = tmp_path / "trace.txt"
    clean = traced(train, "-o", str(log), *no_swap)
    assert clean.returncode == 0, clean.stderr
    assert beside(bundle) == set()
    renames = [c for c in calls(log.read_text()) if c[1] == "rename"]
    assert "/.B.old-" in renames[-2][2]  # the old one aside, then the new one in
    old = loadable(bundle)
    killed_at(train, "rename", len(renames) - 1, *no_swap)  # before moving the old one aside
    assert loadable(bundle) == old
    killed_at(train, "rename", len(renames), *no_swap)  # between the two renames
    assert not bundle.exists() and any(n.startswith(".B.old-") for n in beside(bundle))
    proc = run_cli("verify", str(bundle), "--no-record")
    assert proc.returncode == 0, proc.stderr
    assert f"put back {bundle} from .B.old-" in proc.stderr
    assert loadable(bundle) == old
    clean = traced(train, "-o", os.devnull, *no_swap)
    assert clean.returncode == 0, clean.stderr
    assert beside(bundle) == set() and loadable(bundle) != old


@pytest.mark.full
def test_predict_killed_mid_write_leaves_the_old_output(old_bundle, tmp_path):
    need_strace()
    rows = np.random.default_rng(0).uniform(0, 5, 100_000)
    src, small = tmp_path / "in.csv", tmp_path / "small.csv"
    src.write_text("area\n" + "\n".join(f"{v:.6f}" for v in rows) + "\n")
    small.write_text("area\n3\n1\n")
    out = tmp_path / "scored" / "out.csv"
    out.parent.mkdir()
    assert run_cli("predict", str(old_bundle), "-i", str(small), "-o", str(out)).returncode == 0
    old = out.read_bytes()
    predict = ("predict", str(old_bundle), "-i", str(src), "-o", str(out), "--force", "--chunk-rows", "1000",
               "--no-progress")
    log = tmp_path / "trace.txt"
    proc = traced(predict, "-o", str(log), "-e", "trace=openat,write,rename")
    assert proc.returncode == 0, proc.stderr
    new = out.read_bytes()
    out.write_bytes(old)
    trace = calls(log.read_text())
    (thread, temp_fd), = {(t, r) for t, name, args, r in trace
                          if name == "openat" and "/.out.csv." in args and "O_WRONLY" in args}
    writes, into_temp = 0, []  # strace counts each syscall per thread
    for t, name, args, _ in trace:
        if name == "write" and t == thread:
            writes += 1
            if args.startswith(f"{temp_fd}, "):
                into_temp.append(writes)
    assert len(into_temp) > 10, "the scored rows were not written in many writes"
    killed_at(predict, "write", into_temp[len(into_temp) // 2])  # half-way through the rows
    temp = [p for p in leftover_names(out) if p.suffix == ".tmp"]
    assert out.read_bytes() == old and len(temp) == 1 and 0 < temp[0].stat().st_size < len(new)
    killed_at(predict, "rename", 1)  # written in full, not yet renamed into place
    assert out.read_bytes() == old and not temp[0].exists()  # this run removed the half-written one
    (complete,) = leftover_names(out)
    assert complete.read_bytes() == new
    proc = run_cli(*predict)
    assert proc.returncode == 0, proc.stderr
    assert f"removed {complete}, left by a run that was killed" in proc.stderr
    assert out.read_bytes() == new and beside(out) == set()


HOLD = """
import sys
from torchport.runtime.files import atomic_write, staging_dir
stage = staging_dir(sys.argv[1])
def write(tmp):
    tmp.write_text("half")
    print(stage, tmp, flush=True)
    sys.stdin.readline()
atomic_write(sys.argv[2], write)
"""


def test_leftovers_a_live_process_holds_are_left_alone(tmp_path):
    target, scored = tmp_path / "B", tmp_path / "out.csv"
    dead_dir, dead_file = tmp_path / ".B.tmp-deadbeef", tmp_path / ".out.csv.deadbeef.tmp"
    dead_file.write_text("half")
    other = tmp_path / ".B-notes.tmp"  # not a name torchport writes: never touched
    other.write_text("mine")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(target), str(scored)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        stage, temp = map(Path, holder.stdout.readline().split())
        assert not dead_file.exists()  # the holder's own write removed it first
        dead_dir.mkdir()  # as a run killed since would leave it
        done = remove_leftovers(target)
        assert done == [f"removed {dead_dir}, left by a run that was killed"]
        assert stage.is_dir() and temp.is_file()
        assert remove_leftovers(scored) == [] and temp.is_file()
        mine = staging_dir(target)  # another writer works beside it, leaving it alone
        assert mine != stage and stage.is_dir()
        discard_dir(mine)
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert sorted(remove_leftovers(target) + remove_leftovers(scored)) == sorted(
        f"removed {p}, left by a run that was killed" for p in (stage, temp))
    assert other.read_text() == "mine"


def test_serve_puts_back_and_removes_what_killed_writers_left(old_bundle, tmp_path):
    from servers import serving
    bundle = tmp_path / "B"
    shutil.copytree(old_bundle, tmp_path / ".B.old-0badf00d")  # a replacement killed between its renames
    (tmp_path / ".B.tmp-0badf00d").mkdir()
    with serving(bundle) as server:
        assert f"put back {bundle} from .B.old-0badf00d" in server.log
        assert beside(bundle) == set()
    repo = tmp_path / "repo"
    shutil.copytree(old_bundle, repo / "seed" / "1")
    (repo / "seed" / ".1.tmp-0badf00d").mkdir()  # a version being added, killed
    (repo / ".seed.tmp-0badf00d").mkdir()  # a model being added, killed
    with serving(repo):
        assert sorted(os.listdir(repo)) == ["seed"] and os.listdir(repo / "seed") == ["1"]


# --- errors of the machine: a full disk, a read-only folder, permission denied ---

@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs mounted on a fresh folder (root only), unmounted afterwards."""
    where = tmp_path / "mnt"
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        reason = f"cannot mount a tmpfs here ({proc.stderr.strip() or 'mount failed'}): needs root"
        if os.environ.get("CI") and os.geteuid() == 0:
            pytest.fail(reason)  # CI runs as root, where mounting works
        pytest.skip(reason)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` with one file, leaving about ``leave`` bytes free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            f.write(b"\0" * max(0, free - leave))
            while not leave:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def one_error_line(proc: subprocess.CompletedProcess, command: str) -> str:
    lines = without_status(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"torchport {command}: error: ") and "nothing was written" in lines[0]
    return lines[0]


def test_predict_onto_a_full_disk(old_bundle, tmpfs):
    fill(tmpfs, 0)
    src = tmpfs.parent / "in.csv"
    src.write_text("area\n" + "3\n" * 5000)
    line = one_error_line(run_cli("predict", str(old_bundle), "-i", str(src), "-o", str(tmpfs / "out.csv")),
                          "predict")
    assert f"{tmpfs / 'out.csv'}: no space left on device" in line
    assert os.listdir(tmpfs) == ["filler"]


@pytest.mark.parametrize("leave, options, what", [
    (0, FAST, "B.lock"),                                   # not even the lock file fits
    (40_000, ("--no-progress",), "B.train-state.pt"),      # the tutorial's SGD: its training state
    (200_000, ("--optimizer", "exact", "--no-progress"), "B"),  # the bundle, plots and every format
])
def test_train_onto_a_full_disk(tmpfs, leave, options, what):
    fill(tmpfs, leave)
    line = one_error_line(run_cli("train", "--out", str(tmpfs / "B"), *options), "train")
    assert f"{tmpfs / what}: no space left on device" in line
    assert os.listdir(tmpfs) == ["filler"]


def test_a_read_only_folder(old_bundle, tmpfs, tmp_path):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    src = tmp_path / "in.csv"
    src.write_text("area\n3\n")
    line = one_error_line(run_cli("predict", str(old_bundle), "-i", str(src), "-o", str(tmpfs / "out.csv")),
                          "predict")
    assert f"{tmpfs / 'out.csv'}: read-only file system" in line
    line = one_error_line(run_cli("train", "--out", str(tmpfs / "B"), *FAST), "train")
    assert f"{tmpfs / 'B.lock'}: read-only file system" in line
    assert os.listdir(tmpfs) == []


def test_permission_denied(old_bundle, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    src = tmp_path / "in.csv"
    src.write_text("area\n3\n")
    command = [str(BIN / "torchport"), "predict", str(old_bundle), "-i", str(src), "-o", str(locked / "out.csv")]
    if os.geteuid() == 0:  # root passes permission checks: drop the capabilities that let it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    line = one_error_line(proc, "predict")
    assert f"{locked / 'out.csv'}: permission denied" in line
    assert os.listdir(locked) == []
