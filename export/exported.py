"""model.pt2: the module as a torch.export ExportedProgram with a dynamic batch, saved and loaded with
torch's own API. Loading first checks the archive for everything torch.export.load could unpickle or run
(docs/formats.md), so a bundle's model.pt2 is loaded without running pickled code."""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from torchport.export.torch_calls import evaluating, export_error, first_line, quiet_torch
from torchport.runtime.errors import BundleError

# An example batch of more than one row: a batch traced at 1 row is specialised to 1 (torch.export's 0/1
# specialisation), and the program would refuse every other batch size.
EXAMPLE_ROWS = 3
PROGRAM_NAME = "model"
# What an archive written by torch.export.save for one program holds (below its root folder); anything
# else (AOTInductor's native code, executorch, extra files, other programs) is refused.
MEMBERS = re.compile(r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                     r"|models/model\.json|data/sample_inputs/model\.pt"
                     r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
                     r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+)")
# torch's deserializer hands every symbolic shape to sympy.sympify, which evaluates it as Python: only
# expressions built from these names, quoted symbol names, numbers and arithmetic pass.
SYMPY_NAMES = {"Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Mod", "Abs",
               "True", "False", "positive", "integer", "nonnegative", "real", "finite", "oo", "FloorDiv",
               "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
               "TruncToInt", "RoundToInt", "ToFloat", "Identity", "IntTrueDiv", "FloatTrueDiv", "PowByNatural"}
EXPR_TOKEN = re.compile(r"\s*(?:([A-Za-z][A-Za-z0-9]*)|('[a-z]+\d+')|(\d+(?:\.\d+)?)|([-+*/(),=<>]))")
SYMBOL = re.compile(r"[a-z]+\d+")
# Operators a node may call: registered torch operators and Python's arithmetic on sizes.
TARGETS = ("torch.ops.", "_operator.", "math.")


def export_program(module: nn.Module, n_features: int, device: str = "cpu",
                   dtype: torch.dtype = torch.float32) -> torch.export.ExportedProgram:
    """``module`` (rows x features -> rows x targets) as an ExportedProgram whose batch dimension is dynamic
    (from 1 row up), traced with an example batch of EXAMPLE_ROWS rows of ``dtype`` on ``device``."""
    example = (torch.zeros(EXAMPLE_ROWS, n_features, dtype=dtype, device=device),)
    batch = torch.export.Dim("batch", min=1)
    try:
        with quiet_torch():
            return torch.export.export(evaluating(module), example, dynamic_shapes=({0: batch},), strict=False)
    except Exception as e:  # torch.export raises many types for modules it cannot trace
        raise export_error("export the module (torch.export, where ONNX and every torch-side format start)",
                           e) from e


def save_program(program: torch.export.ExportedProgram, path: Path) -> None:
    """Write ``program`` with torch.export.save (into memory, then by Python: a full disk is an OSError)."""
    buffer = io.BytesIO()
    with quiet_torch():
        torch.export.save(program, buffer)
    path.write_bytes(buffer.getvalue())


def _expressions(node: object):
    """Every ``expr_str`` in the program's JSON."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr_str" and isinstance(value, str):
                yield value
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _expressions(value)


def _safe_expression(text: str) -> bool:
    pos = 0
    while pos < len(text.rstrip()):
        m = EXPR_TOKEN.match(text, pos)
        if not m:
            return False
        name = m.group(1)
        if name is not None and name not in SYMPY_NAMES and not SYMBOL.fullmatch(name):
            return False
        pos = m.end()
    return True


def _targets(program: dict):
    graph = program.get("graph_module", {}).get("graph", {})
    for node in graph.get("nodes", []):
        yield node.get("target", "")


def archive_members(data: bytes, where: str, allowed: re.Pattern,
                    what: str) -> tuple[zipfile.ZipFile, str, dict[str, str]]:
    """The zip archive in ``data``, its one root folder and its files (path below the root -> full name);
    BundleError naming ``where`` when it has several roots or a file ``allowed`` does not match (what ``what``
    would not hold). Raises zipfile.BadZipFile for bytes that are no zip archive."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    names = archive.namelist()
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1:
        raise BundleError(f"{where} is not one .pt2 archive (top-level folders {sorted(roots)})")
    members = {n.split("/", 1)[1]: n for n in names if "/" in n and not n.endswith("/")}
    odd = sorted(m for m in members if not allowed.fullmatch(m))
    if odd:
        raise BundleError(f"{where} holds members {what} does not ({', '.join(odd[:5])}); it was refused "
                          "without loading it")
    return archive, roots.pop(), members


def check_archive(data: bytes, where: str) -> None:
    """Refuse (BundleError naming ``where``) an archive from which torch.export.load would unpickle
    anything but tensors, load native code, or run code: members outside MEMBERS, weights or constants
    stored as pickles, custom objects, sample inputs torch's weights-only unpickler refuses (torch would
    retry them with the full one), guard code, symbolic shapes outside a small grammar, calls to anything
    but registered operators."""
    try:
        archive, root, members = archive_members(data, where, MEMBERS, "a torch.export program")
        read = lambda member: archive.read(members[member]) if member in members else None  # noqa: E731
        for config in ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
            entries = json.loads(read(config) or b'{"config": {}}').get("config", {})
            pickled = sorted(k for k, e in entries.items() if e.get("use_pickle") or
                             not str(e.get("path_name", "")).startswith(("weight_", "tensor_")))
            if pickled:
                raise BundleError(f"{where} stores {', '.join(pickled[:5])} as pickled objects; it was refused "
                                  "without loading it")
        sample = read("data/sample_inputs/model.pt")
        if sample:
            torch.load(io.BytesIO(sample), weights_only=True, map_location="cpu")
        program = json.loads(read("models/model.json") or b"{}")
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, KeyError) as e:
        raise BundleError(f"{where} is not a torch.export archive ({type(e).__name__}: {e})") from None
    except Exception as e:  # torch.load's weights-only unpickler refuses with its own error types
        if isinstance(e, BundleError):
            raise
        raise BundleError(f"{where}: its sample inputs hold more than tensors ({str(e).splitlines()[0]}); "
                          "it was refused without loading it") from None
    if not isinstance(program, dict) or "graph_module" not in program:
        raise BundleError(f"{where} holds no program ({root}/models/model.json)")
    if program.get("guards_code"):
        raise BundleError(f"{where} carries guard code, which loading it would run; it was refused")
    bad = [e for e in _expressions(program) if not _safe_expression(e)]
    if bad:
        raise BundleError(f"{where} has a symbolic shape that is not plain arithmetic ({bad[0][:80]!r}); it was "
                          "refused without loading it")
    calls = sorted({t for t in _targets(program) if not str(t).startswith(TARGETS)})
    if calls:
        raise BundleError(f"{where} calls {', '.join(map(str, calls[:5]))}, which are not torch operators; it "
                          "was refused without loading it")


def load_program(data: bytes, where: str) -> torch.export.ExportedProgram:
    """The ExportedProgram in ``data`` (the checked bytes of a model.pt2), after ``check_archive``."""
    check_archive(data, where)
    try:
        with quiet_torch():
            return torch.export.load(io.BytesIO(data))
    except Exception as e:  # torch raises many types for archives of another version
        raise BundleError(f"{where} could not be loaded by torch {torch.__version__} ({first_line(e)}); "
                          "re-export the bundle") from None
