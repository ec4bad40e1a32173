"""torch.export programs (model.pt2) and AOTInductor packages (model.aoti.pt2) in bundles: written by
`torchport train --formats`, verified with every other format, loadable with torch's plain API and with
torchport.export.load_model, answering like model.onnx from 1 to 16M rows, refused when tampered with or
when the manifest says they cannot run here, and safe to load (model.pt2 never unpickles code)."""
from __future__ import annotations

import io
import json
import pickle
import re
import shutil
import subprocess
import tempfile
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import X86, run_cli
from torchport.export import BundleExistsError, assert_parity, load_model, write_module_bundle
from torchport.runtime import Predictor
from torchport.runtime.bundle import AOTI_FILE, EXPORTED_FILE, MANIFEST, ONNX_FILE, TORCHSCRIPT_FILE, Bundle, \
    Manifest, sha256_file
from torchport.runtime.errors import BundleError, InputError

ATOL, RTOL = 1e-5, 1e-4


def _rows(bundle, n: int, seed: int = 0) -> np.ndarray:
    width = len(Bundle.open(bundle).manifest.features)
    return np.random.default_rng(seed).normal(1.0, 2.0, size=(n, width)).astype(np.float32)


def _onnx(bundle, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(bundle / ONNX_FILE), providers=["CPUExecutionProvider"])
    return session.run(None, {"features": x})[0]


def _copy(bundle, tmp_path, name="copy"):
    out = tmp_path / name
    shutil.copytree(bundle, out)
    return out


def _rewrite_manifest(bundle, change):
    path = bundle / MANIFEST
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


@pytest.mark.full
def test_train_with_every_format_writes_and_verifies_all_four(aoti_seed_bundle):
    m = Bundle.open(aoti_seed_bundle).manifest
    assert m.export.formats == ("onnx", "torchscript", "exported", "aoti")
    summary = (aoti_seed_bundle.parent / "train_stdout.txt").read_text()
    assert "model.aoti.pt2: compiled by" in summary and "parity: PASSED" in summary
    proc = run_cli("verify", str(aoti_seed_bundle), "--no-record")
    assert proc.returncode == 0, proc.stderr
    for backend in ("torch", "torchscript", "exported", "aoti", "onnxruntime"):
        assert f"max |{backend} - float64|" in proc.stdout
    assert "parity: PASSED" in proc.stdout and "note:" not in proc.stdout
    cases = [c.name for c in m.parity.cases]
    assert {"random 1 rows", "random 2 rows", "random 7 rows", "random 40000 rows"} <= set(cases)


@pytest.mark.full
def test_every_file_says_what_wrote_it(aoti_seed_bundle):
    m = Bundle.open(aoti_seed_bundle).manifest
    for name, entry in m.files.items():
        assert entry.writer is not None and entry.writer.tool and entry.writer.seconds >= 0, name
        assert entry.writer.versions["torchport"]
    package = m.files[AOTI_FILE].writer
    assert package.device == "cpu" and package.compiler and package.versions["torch"] == torch.__version__
    assert package.seconds > 0.5  # a real compile, not a cache lookup of nothing
    r = package.requires
    assert r.torch == torch.__version__ and r.device == "cpu" and r.cpu_target == "native" and r.platform
    assert r.problems(torch.__version__) == []
    assert m.files[EXPORTED_FILE].writer.compiler is None and m.files[ONNX_FILE].writer.versions["onnx"]
    assert m.files["report/index.html"].writer.versions["jinja2"]
    assert "the same model compiled by AOTInductor for the CPU" in (aoti_seed_bundle / "report" / "index.html").read_text()


@pytest.mark.full
@pytest.mark.parametrize("rows", [1, 2, 1000, 1 << 20])
def test_plain_torch_loaders_answer_like_model_onnx(aoti_seed_bundle, aoti_mlp_bundle, rows):
    for bundle in (aoti_seed_bundle, aoti_mlp_bundle):
        x = _rows(bundle, rows)
        expected = _onnx(bundle, x)
        program = torch.export.load(str(bundle / EXPORTED_FILE)).module()
        package = torch._inductor.aoti_load_package(str(bundle / AOTI_FILE))
        with torch.inference_mode():
            for found in (program(torch.from_numpy(x)), package(torch.from_numpy(x))):
                assert tuple(found.shape) == (rows, 1)
                np.testing.assert_allclose(found.numpy(), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.full
def test_packages_answer_like_model_onnx_up_to_16m_rows(aoti_seed_bundle, aoti_mlp_bundle):
    rows = 1 << 24
    for bundle in (aoti_seed_bundle, aoti_mlp_bundle):
        x = _rows(bundle, rows, seed=1)
        session = ort.InferenceSession(str(bundle / ONNX_FILE), providers=["CPUExecutionProvider"])
        package = load_model(bundle, "aoti")
        found = package(x)
        assert found.shape == (rows, 1)
        step = 1 << 20  # the reference in 1M-row pieces, to keep the MLP's hidden layers small
        for start in range(0, rows, step):
            expected = session.run(None, {"features": x[start:start + step]})[0]
            np.testing.assert_allclose(found[start:start + step], expected, atol=ATOL, rtol=RTOL)
        del found, x


@pytest.mark.full
def test_load_model_follows_the_predictors_input_rules(aoti_mlp_bundle):
    import pandas as pd
    predictor = Predictor(aoti_mlp_bundle)
    features = predictor.feature_names
    x = _rows(aoti_mlp_bundle, 50)
    for fmt in ("exported", "aoti", "torchscript", "module"):
        model = load_model(aoti_mlp_bundle, fmt)
        np.testing.assert_allclose(model(x), predictor.predict(x), atol=ATOL, rtol=RTOL)
        frame = pd.DataFrame(x, columns=features)[features[::-1]]  # by name, in any order
        answer = model.predict(frame)
        assert list(answer.columns) == predictor.target_names
        np.testing.assert_allclose(answer.to_numpy(), predictor.predict(x), atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(model(x.astype(np.float64)[:3].tolist()), predictor.predict(x[:3]), atol=1e-4)
        assert model(np.empty((0, len(features)))).shape == (0, 1) and model([]) == []
        bad = x[:4].copy()
        bad[2, 1] = np.nan
        with pytest.raises(InputError, match=f"row 2 .*column '{features[1]}'"):
            model(bad)
        assert np.isnan(load_model(aoti_mlp_bundle, fmt, allow_nonfinite=True)(bad)[2, 0])
        with pytest.raises(InputError, match="shape"):
            model(x[:, :2])
    with pytest.raises(InputError, match="format must be one of"):
        load_model(aoti_mlp_bundle, "onnx")


@pytest.mark.full
@pytest.mark.parametrize("name", [AOTI_FILE, EXPORTED_FILE])
def test_a_tampered_file_is_refused_before_it_is_loaded(aoti_seed_bundle, tmp_path, name):
    bad = _copy(aoti_seed_bundle, tmp_path)
    data = bytearray((bad / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / name).write_bytes(bytes(data))
    fmt = "aoti" if name == AOTI_FILE else "exported"
    with pytest.raises(BundleError, match=f"{name} does not match the manifest"):
        load_model(bad, fmt)
    proc = run_cli("verify", str(bad), "--no-record")
    assert proc.returncode == 2 and f"{name} does not match the manifest" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.full
def test_a_package_this_machine_cannot_run_is_refused_with_a_message(aoti_seed_bundle, tmp_path):
    cases = {"cpu": lambda r: r.update(cpu_flags=r["cpu_flags"] + ["avx512_imaginary"]),
             "torch": lambda r: r.update(torch="1.0.0"),
             "platform": lambda r: r.update(platform="plan9-mips")}
    messages = {"cpu": "CPU features this CPU lacks (avx512_imaginary", "torch": "compiled by torch 1.0.0",
                "platform": "compiled for plan9-mips"}
    for what, change in cases.items():
        other = _copy(aoti_seed_bundle, tmp_path, what)
        _rewrite_manifest(other, lambda obj: change(obj["files"][AOTI_FILE]["writer"]["requires"]))
        with pytest.raises(BundleError, match=f"{AOTI_FILE} cannot run here: .*{re.escape(messages[what])}"):
            load_model(other, "aoti")
        proc = run_cli("verify", str(other), "--no-record")  # the other formats are still checked
        assert proc.returncode == 0, proc.stderr
        assert f"note: {AOTI_FILE} not run: " in proc.stdout and "torch - aoti" not in proc.stdout
    proc = run_cli("bench", str(other), "--quick", "--batch-sizes", "1", "--out", str(tmp_path / "bench"))
    assert proc.returncode == 0, proc.stderr
    assert "not run: aoti on cpu" in proc.stdout and "AOTInductor" not in proc.stdout.split("not run")[0]


@pytest.mark.full
def test_a_package_without_requirements_is_not_loaded(aoti_seed_bundle, tmp_path):
    other = _copy(aoti_seed_bundle, tmp_path)
    _rewrite_manifest(other, lambda obj: obj["files"][AOTI_FILE].pop("writer"))
    with pytest.raises(BundleError, match="does not say what this package needs to run"):
        load_model(other, "aoti")


def _zmm_instructions(package_path) -> int:
    """How many instructions of the package's native code use AVX-512's zmm registers."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed: cannot read the package's machine code")
    with zipfile.ZipFile(package_path) as z, tempfile.TemporaryDirectory() as tmp:
        count = 0
        for name in z.namelist():
            if name.endswith(".so"):
                path = z.extract(name, tmp)
                text = subprocess.run([objdump, "-d", "--no-show-raw-insn", path], capture_output=True,
                                      text=True, check=True).stdout
                count += text.count("%zmm")
        return count


@pytest.mark.full
@pytest.mark.skipif(not X86, reason="x86-64 levels are an x86 matter")
def test_an_x86_64_v3_package_needs_and_uses_no_avx512(aoti_mlp_bundle):
    r = Bundle.open(aoti_mlp_bundle).manifest.files[AOTI_FILE].writer.requires
    assert r.cpu_target == "x86-64-v3" and r.vector_isa == "avx2"
    assert "avx2" in r.cpu_flags and not any(f.startswith("avx512") for f in r.cpu_flags)
    assert _zmm_instructions(aoti_mlp_bundle / AOTI_FILE) == 0


def test_load_refuses_a_program_that_would_unpickle_or_run_code(seed_bundle, tmp_path):
    """model.pt2 archives that torch.export.load would unpickle objects from, or run code of, are refused
    before torch sees them (the manifest re-hashed, as a hostile bundle would be)."""
    marker = tmp_path / "ran"
    source = (seed_bundle / EXPORTED_FILE).read_bytes()

    def rebuilt(edit) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(source)) as old, zipfile.ZipFile(out, "w") as new:
            root = old.namelist()[0].split("/")[0]
            members = {n.split("/", 1)[1]: old.read(n) for n in old.namelist()}
            for name, data in edit(members).items():
                new.writestr(f"{root}/{name}", data)
        return out.getvalue()

    def json_edit(member, change):
        def edit(members):
            obj = json.loads(members[member])
            change(obj)
            return {**members, member: json.dumps(obj).encode()}
        return edit

    def first_weight(obj):
        next(iter(obj["config"].values()))["use_pickle"] = True

    def evil_shape(obj):
        node = obj["graph_module"]["graph"]["tensor_values"]
        first = next(v for v in node.values() if v["sizes"] and "as_expr" in v["sizes"][0])
        first["sizes"][0]["as_expr"]["expr_str"] = f"__import__('pathlib').Path('{marker}').touch()"

    edits = {
        "a pickled weight": (json_edit("data/weights/model_weights_config.json", first_weight), "pickled objects"),
        "native code": (lambda m: {**m, "data/aotinductor/model/x.so": b"\x7fELF"}, "members a torch.export"),
        "guard code": (json_edit("models/model.json", lambda o: o.update(guards_code=[f"open('{marker}', 'w')"])),
                       "guard code"),
        "a symbolic shape that is code": (json_edit("models/model.json", evil_shape), "not plain arithmetic"),
    }
    for what, (edit, message) in edits.items():
        bad = _copy(seed_bundle, tmp_path, what.replace(" ", "_"))
        (bad / EXPORTED_FILE).write_bytes(rebuilt(edit))
        _rewrite_manifest(bad, lambda obj: obj["files"][EXPORTED_FILE].update(sha256=sha256_file(bad / EXPORTED_FILE),
                                                                    bytes=(bad / EXPORTED_FILE).stat().st_size))
        with pytest.raises(BundleError, match=message):
            load_model(bad, "exported")
        assert not marker.exists(), what


class _Touch:
    """A pickle that creates a file when it is loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.full
def test_a_package_that_carries_a_program_with_pickles_is_refused(aoti_seed_bundle, tmp_path):
    """torch's package loader also loads any ExportedProgram in the archive, unpickling its pickled weights
    with the full unpickler: such a package is refused before torch sees it (the manifest re-hashed)."""
    marker = tmp_path / "ran"
    program = zipfile.ZipFile(aoti_seed_bundle / EXPORTED_FILE)
    parts = ("models/", "data/weights/", "data/constants/", "data/sample_inputs/")
    added = {n.split("/", 1)[1]: program.read(n) for n in program.namelist() if n.split("/", 1)[1].startswith(parts)}
    config = json.loads(added["data/weights/model_weights_config.json"])
    entry = next(iter(config["config"].values()))
    entry["use_pickle"] = True
    added["data/weights/model_weights_config.json"] = json.dumps(config).encode()
    added[f"data/weights/{entry['path_name']}"] = pickle.dumps(_Touch(marker))
    bad = _copy(aoti_seed_bundle, tmp_path)
    out = io.BytesIO()
    with zipfile.ZipFile(aoti_seed_bundle / AOTI_FILE) as old, zipfile.ZipFile(out, "w") as new:
        root = old.namelist()[0].split("/")[0]
        for name in old.namelist():
            new.writestr(name, old.read(name))
        for name, data in added.items():
            new.writestr(f"{root}/{name}", data)
    (bad / AOTI_FILE).write_bytes(out.getvalue())
    _rewrite_manifest(bad, lambda obj: obj["files"][AOTI_FILE].update(sha256=sha256_file(bad / AOTI_FILE),
                                                                    bytes=(bad / AOTI_FILE).stat().st_size))
    with pytest.raises(BundleError, match=f"{AOTI_FILE} holds members an AOTInductor package does not"):
        load_model(bad, "aoti")
    proc = run_cli("verify", str(bad), "--no-record")
    assert proc.returncode == 2 and "members an AOTInductor package does not" in proc.stderr
    assert not marker.exists()


class Residual(torch.nn.Module):
    """A module torchport does not define: a normalised residual block with two heads."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(3)
        self.inner = torch.nn.Linear(3, 3)
        self.heads = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + torch.nn.functional.silu(self.inner(self.norm(x)))
        return self.heads(h) + torch.tensor([0.0, 10.0])


@pytest.fixture(scope="module")
def module_bundle(tmp_path_factory):
    torch.manual_seed(7)
    module = Residual().eval()
    out = tmp_path_factory.mktemp("module") / "residual"
    x = np.random.default_rng(3).normal(size=(300, 3)).astype(np.float32)
    manifest = write_module_bundle(module, ["a", "b", "c"], ["low", "high"], out, inputs=x)
    return module, out, manifest, x


def test_a_module_torchport_does_not_define_can_be_bundled(module_bundle):
    module, out, manifest, x = module_bundle
    assert manifest.parity.passed and manifest.model == {"kind": "module", "class": f"{__name__}.Residual",
                                                         "n_features": 3, "n_targets": 2}
    assert EXPORTED_FILE in manifest.files and "checkpoint.pt" not in manifest.files
    pairs = {(p.reference, p.candidate) for p in manifest.parity.pairs}
    assert {("float64", "torch"), ("float64", "exported"), ("float64", "onnxruntime")} <= pairs
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(Predictor(out).predict(x), expected, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(load_model(out)(x), expected, atol=ATOL, rtol=RTOL)
    page = (out / "report" / "index.html").read_text()
    assert f"module {__name__}.Residual" in page and "the same model as a torch.export ExportedProgram" in page


@pytest.mark.full
def test_verify_export_and_bench_work_on_such_a_bundle(module_bundle, tmp_path):
    _, out, _, x = module_bundle
    proc = run_cli("verify", str(out), "--no-record")
    assert proc.returncode == 0, proc.stderr
    assert "max |exported - float64|" in proc.stdout and "parity: PASSED" in proc.stdout
    again = tmp_path / "again"
    proc = run_cli("export", str(out), "--out", str(again), "--opset", "20")
    assert proc.returncode == 0, proc.stderr
    assert Bundle.open(again).manifest.export.opset == 20 and Bundle.open(again).has(EXPORTED_FILE)
    np.testing.assert_allclose(Predictor(again).predict(x), Predictor(out).predict(x), atol=ATOL, rtol=RTOL)
    proc = run_cli("bench", str(out), "--quick", "--batch-sizes", "1,64", "--out", str(tmp_path / "bench"))
    assert proc.returncode == 0, proc.stderr
    assert "ExportedProgram" in proc.stdout and "is not torchport's" in proc.stdout
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert report["models"][0]["model"]["kind"] == "module"
    assert all(r["agrees_with_torch"] is not False for r in report["results"])


def test_module_bundle_mistakes_are_refused(tmp_path):
    with pytest.raises(InputError, match="answers 2 column"):
        write_module_bundle(Residual(), ["a", "b", "c"], ["only"], tmp_path / "x")
    with pytest.raises(InputError, match="cannot answer a \\(2, 4\\)"):
        write_module_bundle(Residual(), ["a", "b", "c", "d"], ["p", "q"], tmp_path / "x")
    (tmp_path / "x").mkdir()
    with pytest.raises(BundleExistsError):
        write_module_bundle(Residual(), ["a", "b", "c"], ["p", "q"], tmp_path / "x")
    assert not any((tmp_path / "x").iterdir())


def test_without_torchscript_the_bundle_is_written_without_it(seed_bundle, tmp_path, monkeypatch):
    out = tmp_path / "no-ts"
    with monkeypatch.context() as patched:
        patched.delattr(torch.jit, "script")  # as if torch had removed TorchScript
        proc = run_cli("export", str(seed_bundle), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "torchscript: not written" in line]
    assert len(lines) == 1 and "did not write TorchScript" in lines[0]
    m = Bundle.open(out).manifest
    assert TORCHSCRIPT_FILE not in m.files and not (out / TORCHSCRIPT_FILE).exists()
    assert "torchscript" not in m.export.formats and "torchscript" in m.export.not_written
    assert m.parity.passed and "Traceback" not in proc.stderr
    proc = run_cli("export", str(out), "--triton", str(tmp_path / "repo"), "--libtorch")
    assert proc.returncode == 2 and f"holds no {TORCHSCRIPT_FILE} for the libtorch backend" in proc.stderr


def test_verify_and_bench_skip_a_torchscript_file_torch_cannot_load(seed_bundle, tmp_path, monkeypatch):
    monkeypatch.delattr(torch.jit, "load")  # as if torch had removed TorchScript
    for args in (["verify", str(seed_bundle), "--no-record"],
                 ["bench", str(seed_bundle), "--quick", "--batch-sizes", "1", "--out", str(tmp_path / "b")]):
        proc = run_cli(*args)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        assert f"{TORCHSCRIPT_FILE} not run: torch" in proc.stdout or "not run: torchscript on cpu" in proc.stdout


@pytest.mark.full
def test_assert_parity_covers_every_format_and_old_manifests_stay_readable(aoti_seed_bundle, tmp_path):
    report = assert_parity(aoti_seed_bundle)
    every = {("float64", f) for f in ("torch", "torchscript", "exported", "aoti", "onnxruntime")}
    assert report.notes == () and every <= {(p.reference, p.candidate) for p in report.pairs}
    old = _copy(aoti_seed_bundle, tmp_path)

    def strip(obj):  # a format-2 manifest from before writers, formats and notes were recorded
        for entry in obj["files"].values():
            entry.pop("writer")
        obj["export"].pop("formats")
        obj["export"].pop("not_written")
        obj["parity"].pop("notes")
    _rewrite_manifest(old, strip)
    m = Manifest.from_json(json.loads((old / MANIFEST).read_text()))
    assert all(e.writer is None for e in m.files.values()) and m.export.formats == ()
    assert Predictor(old).predict([[3.0]]) == Predictor(aoti_seed_bundle).predict([[3.0]])


def test_aoti_cpu_and_formats_are_checked(tmp_path):
    proc = run_cli("train", "--formats", "onnx,tflite", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "unknown format(s) 'tflite'" in proc.stderr
    proc = run_cli("train", "--aoti-cpu", "pentium", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "--aoti-cpu" in proc.stderr
    assert not (tmp_path / "x").exists()
