"""The layout's rules, read from the source: each package imports only what it may (runtime: itself; train:
itself; export: train and runtime; benchmarks: all three), no module imports torch in the runtime, and the
module import graph (imports inside functions included) has no cycle. And the runtime's one guarded use of
ONNX Runtime's private API: with those names gone, the hot path gives the same answers."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

PACKAGES = {"train": "train", "export": "export", "runtime": "runtime", "benchmarks": "benchmarks"}
ALLOWED = {"runtime": {"runtime"}, "train": {"train"}, "export": {"export", "train", "runtime"},
           "benchmarks": {"benchmarks", "export", "train", "runtime"}}
NO_TORCH_IN = {"runtime"}


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if any(p.startswith(".") for p in parts):  # benchmarks/.venvs (the peer's venv), .work: not ours
                continue
            name = ".".join(("torchport", package, *parts)).removesuffix(".__init__")
            out[name] = path
    return out


def _imports(path: Path, name: str) -> set[str]:
    """Every module named by an import statement anywhere in the file (functions included); ``from X import
    Y`` names X.Y when that is a module, else X (a package's __init__ that re-exports its modules is not
    counted as imported by them)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names}
            found |= (subs & MODULE_NAMES) | ({base} if subs - MODULE_NAMES else set())
    return found


MODULES = _modules()
MODULE_NAMES = set(MODULES)
GRAPH = {name: {m for m in _imports(path, name) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_every_package_imports_only_what_it_may():
    wrong = []
    for name, path in MODULES.items():
        package = name.split(".")[1]
        for imported in _imports(path, name):
            parts = imported.split(".")
            if parts[0] == "torchport" and len(parts) > 1 and parts[1] not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
            if package in NO_TORCH_IN and parts[0] == "torch":
                wrong.append(f"{path.relative_to(ROOT)} imports torch")
    assert not wrong, "\n".join(wrong)


def test_the_module_import_graph_has_no_cycle():
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(GRAPH):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_rules_are_checked_on_real_modules():
    assert "torchport.runtime.predictor" in MODULES and "torchport.benchmarks.cli_bench" in MODULES
    assert "torchport.runtime.bundle" in GRAPH["torchport.runtime.predictor"]
    assert "torchport.export.verify" in GRAPH["torchport.export.bundle_writer"]


HIDDEN = """
import json, sys
import numpy as np
import onnxruntime.capi._pybind_state as C
del C.OrtValueVector   # as if a release had renamed the private names torchport uses
import torchport.runtime.ort_api as api
assert not api.PRIVATE_API
from torchport.runtime import Predictor
bundle, rows = sys.argv[1], json.loads(sys.argv[2])
p = Predictor(bundle, providers="cpu")
rng = np.random.default_rng(0)
out = {}
for n in rows:
    x = rng.uniform(0, 5, size=(n, p.n_features)).astype(np.float32)
    y = p.predict(x)
    into = np.empty_like(y)
    p.predict(x, out=into)
    assert np.array_equal(y, into)
    out[n] = [float(y.sum(dtype=np.float64)), y[:3].tolist(), y[-3:].tolist()]
print(json.dumps(out))
"""
ROWS = [1, 7, 64, 65, 5000, 40000, 2_200_000]


def _answers(bundle: Path, hidden: bool) -> dict:
    code = HIDDEN if hidden else HIDDEN.replace("del C.OrtValueVector", "pass").replace(
        "assert not api.PRIVATE_API", "assert api.PRIVATE_API")
    proc = subprocess.run([sys.executable, "-c", code, str(bundle), json.dumps(ROWS)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("bundle", ["seed", "mlp"])
def test_the_hot_path_without_the_private_api_gives_the_same_answers(bundle):
    path = ROOT / "tests" / "data" / "v1" / bundle
    private, public = _answers(path, hidden=False), _answers(path, hidden=True)
    assert private == public
    assert set(public) == {str(n) for n in ROWS} and np.isfinite([v[0] for v in public.values()]).all()
