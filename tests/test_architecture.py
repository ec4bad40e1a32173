"""The layout's rules, read from the source: each package imports only what it may (runtime: itself; train:
itself and the runtime's torch-free foundation; export: train and runtime; benchmarks: all three), the
foundation imports neither torch nor ONNX Runtime nor the rest of the runtime, no module imports torch in the
runtime, and the module import graph (imports inside functions included) has no cycle. No package keeps a twin
of another's definitions, and no module reaches into another module's private state. And the runtime's one
guarded use of ONNX Runtime's private API: with those names gone, the hot path gives the same answers."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

PACKAGES = {"train": "train", "export": "export", "runtime": "runtime", "benchmarks": "benchmarks"}
ALLOWED = {"runtime": {"runtime"}, "train": {"train", "runtime"}, "export": {"export", "train", "runtime"},
           "benchmarks": {"benchmarks", "export", "train", "runtime"}}
NO_TORCH_IN = {"runtime"}
# The torch-free, ONNX-Runtime-free foundation every package may import (train may import nothing else of the
# runtime): errors, strict JSON, reading tables, atomic files and locks, option types, the bundle format,
# the CPU facts the bundle format records, the intervals it keeps, the encoding of its categorical and missing
# cells, the status line of long commands, and lazily loaded package names.
FOUNDATION = {f"torchport.runtime.{name}" for name in
              ("errors", "jsonfields", "tables", "files", "locks", "options", "bundle", "cpus", "status",
                             "lazy", "intervals", "encoding")}
# Public names that two packages both define, each meaning something different there (not a twin).
SAME_NAME_OTHER_THING = {
    "add_arguments": "every command module's argparse hook (runtime.cli calls it)",
    "run": "every command module's entry point (runtime.cli calls it)",
    "main": "every runnable module's entry point",
    "Backend": "a table reader/writer pair (runtime.tables) vs a benchmarked way to run a batch",
    "ModelEntry": "a model directory found in a repository (serve) vs a benchmarked bundle in bench.json",
    "Plan": "how the Predictor runs each batch size (runtime.plan) vs how long a benchmark measures",
    "environment": "the report's Jinja2 environment vs the machine a benchmark ran on",
    "load_model": "a torch-side format as a callable (export) vs a served model version (serve)",
    "model_config": "config.pbtxt text written at export vs the ModelConfig message a server answers with",
    "verify_bundle": "parity of every format (export) vs the signature of a manifest (runtime.signing)",
    "whole_number": "an argparse option type (runtime.options) vs a Regressor setting's check (train.models)",
    "describe": "an error in the command's terms (runtime.cli) vs a learning-rate advice text (train.advice)",
}


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
            if package == "train" and parts[:2] == ["torchport", "runtime"] and imported not in FOUNDATION:
                wrong.append(f"{path.relative_to(ROOT)} imports {imported}, which is not the runtime's foundation")
            if package in NO_TORCH_IN and parts[0] == "torch":
                wrong.append(f"{path.relative_to(ROOT)} imports torch")
    assert not wrong, "\n".join(wrong)


def test_the_foundation_stands_on_its_own():
    """The foundation imports only itself of torchport, and neither torch nor ONNX Runtime: train can use it
    without the runtime's engine, and the base install without torch."""
    assert FOUNDATION <= MODULE_NAMES
    wrong = []
    for name in sorted(FOUNDATION):
        for imported in _imports(MODULES[name], name):
            top = imported.split(".")[0]
            if top in ("torch", "onnxruntime") or imported.startswith("torchport.") and imported not in FOUNDATION:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "\n".join(wrong)


def _top_level_names(path: Path) -> set[str]:
    return {node.name for node in ast.parse(path.read_text(), str(path)).body
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_")}


def test_no_package_keeps_a_twin_of_another_packages_definitions():
    """One DataError, one Fix, one load_dataset, one set of strict-JSON field helpers: a public class or
    function is defined in one package only, unless the name means another thing there (listed, with how)."""
    where = defaultdict(set)
    for name, path in MODULES.items():
        for defined in _top_level_names(path):
            where[defined].add(name)
    packages = {defined: {m.split(".")[1] for m in modules} for defined, modules in where.items()}
    twins = {defined: sorted(where[defined]) for defined, found in packages.items()
             if len(found) > 1 and defined not in SAME_NAME_OTHER_THING}
    assert not twins, "\n".join(f"{d} is defined in {', '.join(m)}" for d, m in sorted(twins.items()))
    for one in ("DataError", "Fix", "TorchportError", "load_dataset", "Fields", "values", "finite_array"):
        assert len(where[one]) == 1, f"{one} is defined in {sorted(where[one])}"
    stale = [d for d in SAME_NAME_OTHER_THING if len(packages.get(d, ())) < 2]
    assert not stale, f"no longer defined in two packages, drop from SAME_NAME_OTHER_THING: {stale}"


def _private_names(tree: ast.AST) -> set[str]:
    """The private names a module defines: its functions and classes (any depth) and the attributes it sets."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_no_module_reaches_into_another_modules_private_state():
    """``obj._name`` on anything but self/cls, where ``_name`` belongs to another torchport module (defined
    or set there, not here), and ``from torchport.x import _name``: both reach past a public interface."""
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}
    owners = defaultdict(set)
    for name, tree in trees.items():
        for private in _private_names(tree):
            owners[private].add(name)
    wrong = []
    for name, tree in trees.items():
        own = _private_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")) \
                    and node.attr not in own and owners.get(node.attr):
                wrong.append(f"{MODULES[name].relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)} "
                             f"(private to {', '.join(sorted(owners[node.attr]))})")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torchport"):
                wrong += [f"{MODULES[name].relative_to(ROOT)}:{node.lineno}: imports {node.module}.{a.name}"
                          for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
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
