"""The C++ example (examples/cpp: built with CMake against the libtorch the torch wheel ships, scoring a CSV
with AOTIModelPackageLoader) answers like Python to 1e-6 x max(1, |y|), and refuses a tampered package, a
package this CPU cannot run, and input it cannot score, each with one line and exit 2."""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch.utils

from conftest import ROOT
from torchport.export import load_model
from torchport.runtime import Predictor
from torchport.runtime.bundle import AOTI_FILE, MANIFEST
from torchport.runtime.cpus import usable_cpus

pytestmark = pytest.mark.full  # a CMake build against libtorch and AOTInductor compiles

APP = ROOT / "examples" / "cpp"


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    """The example, configured and built in a temp directory (nothing cached elsewhere)."""
    cmake, compiler = shutil.which("cmake"), shutil.which("c++") or shutil.which("g++")
    if cmake is None or compiler is None:
        pytest.skip(f"the C++ example needs CMake and a C++ compiler; missing: "
                    f"{', '.join(n for n, p in (('cmake', cmake), ('c++', compiler)) if p is None)}")
    build = tmp_path_factory.mktemp("cpp-build")
    start = time.perf_counter()
    for step in ([cmake, "-S", str(APP), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                  f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"],
                 [cmake, "--build", str(build), "-j", str(usable_cpus())]):
        proc = subprocess.run(step, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (build / "build_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return build / "torchport_score"


def _score(scorer, bundle, csv):
    return subprocess.run([str(scorer), str(bundle), str(csv)], capture_output=True, text=True, timeout=300)


def _write_csv(path, features, x):
    """Columns in reverse order, with an extra one the model does not use."""
    names = list(reversed(features)) + ["note"]
    lines = [",".join(names)] + [",".join([repr(float(v)) for v in reversed(row)] + ["7"]) for row in x]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("which", ["seed", "mlp"])
def test_cpp_answers_like_python(scorer, aoti_seed_bundle, aoti_mlp_bundle, tmp_path, which):
    bundle = aoti_seed_bundle if which == "seed" else aoti_mlp_bundle
    predictor = Predictor(bundle)
    x = np.random.default_rng(5).normal(1.0, 2.0, size=(500, predictor.n_features))
    x[:3] = [[3.0] * predictor.n_features, [0.0] * predictor.n_features, [-1.5] * predictor.n_features]
    _write_csv(tmp_path / "in.csv", predictor.feature_names, x)
    proc = _score(scorer, bundle, tmp_path / "in.csv")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.strip().splitlines()
    assert header.split(",") == [f"{t}_pred" for t in predictor.target_names]
    ours = np.array([[float(v) for v in r.split(",")] for r in rows])
    for python in (load_model(bundle, "aoti")(x), predictor.predict(x)):
        assert ours.shape == python.shape
        assert np.all(np.abs(ours - python) <= 1e-6 * np.maximum(1.0, np.abs(python)))


def test_cpp_refuses_a_tampered_package(scorer, aoti_seed_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(aoti_seed_bundle, bad)
    data = bytearray((bad / AOTI_FILE).read_bytes())
    data[100] ^= 1
    (bad / AOTI_FILE).write_bytes(bytes(data))
    (tmp_path / "in.csv").write_text("area\n3\n")
    proc = _score(scorer, bad, tmp_path / "in.csv")
    assert proc.returncode == 2 and f"{AOTI_FILE} does not match the manifest's sha256" in proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1


def test_cpp_refuses_a_package_for_cpu_features_this_cpu_lacks(scorer, aoti_seed_bundle, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(aoti_seed_bundle, other)
    manifest = json.loads((other / MANIFEST).read_text())
    manifest["files"][AOTI_FILE]["writer"]["requires"]["cpu_flags"].append("avx512_imaginary")
    (other / MANIFEST).write_text(json.dumps(manifest))
    (tmp_path / "in.csv").write_text("area\n3\n")
    proc = _score(scorer, other, tmp_path / "in.csv")
    assert proc.returncode == 2 and "CPU features this CPU lacks (avx512_imaginary)" in proc.stderr


@pytest.mark.parametrize("text, message", [("size\n3\n", 'no column named "area"'),
                                           ("area\n3\nabc\n", 'row 2, column "area": expected a finite number'),
                                           ("area\nnan\n", "expected a finite number")])
def test_cpp_refuses_input_it_cannot_score(scorer, aoti_seed_bundle, tmp_path, text, message):
    (tmp_path / "in.csv").write_text(text)
    proc = _score(scorer, aoti_seed_bundle, tmp_path / "in.csv")
    assert proc.returncode == 2 and message in proc.stderr and proc.stdout == ""
