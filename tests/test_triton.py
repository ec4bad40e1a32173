"""`torchport export --triton`: config.pbtxt parsed into Triton's own ModelConfig message (tritonclient)."""
import json

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from conftest import run_cli
from torchport.export import write_bundle
from torchport.runtime import Predictor
from torchport.runtime.bundle import sha256_file
from torchport.train.models import ModelSpec, build_model


def parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def check_entry(repo, name, bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    config = parse(repo / name / "config.pbtxt")
    graph = onnx.load(str(repo / name / "1" / "model.onnx")).graph
    assert config.name == name and config.backend == "onnxruntime" and config.max_batch_size == 64
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert [i.name for i in config.input] == [graph.input[0].name] == [manifest["inputs"][0]["name"]]
    assert [o.name for o in config.output] == [graph.output[0].name] == [manifest["outputs"][0]["name"]]
    assert list(config.input[0].dims) == [len(manifest["features"])]
    assert list(config.output[0].dims) == [len(manifest["targets"])]
    assert config.input[0].data_type == config.output[0].data_type == model_config_pb2.TYPE_FP32
    assert sha256_file(repo / name / "1" / "model.onnx") == manifest["files"]["model.onnx"]["sha256"]
    # the version directory is a bundle torchport serve can check: the manifest's very bytes beside the model
    assert (repo / name / "1" / "manifest.json").read_bytes() == (bundle / "manifest.json").read_bytes()
    if "report/index.html" in manifest["files"]:  # and its report, as the bundle has it
        assert sha256_file(repo / name / "1" / "report" / "index.html") == manifest["files"]["report/index.html"]["sha256"]
    for variant in ("model.large_batch.onnx", "model.threaded.onnx"):  # and the graphs serve runs from it
        if variant in manifest["files"]:
            assert sha256_file(repo / name / "1" / variant) == manifest["files"][variant]["sha256"]
    if manifest.get("golden"):  # and the golden cases serve runs on loading
        golden = manifest["golden"]["file"]
        assert sha256_file(repo / name / "1" / golden) == manifest["files"][golden]["sha256"]


def test_seed_model(seed_bundle, tmp_path):
    repo = tmp_path / "repo"
    proc = run_cli("export", str(seed_bundle), "--triton", str(repo), "--max-batch-size", "64",
                   "--max-queue-delay-us", "250", "--libtorch")
    assert proc.returncode == 0, proc.stderr
    check_entry(repo, "seed", seed_bundle)
    assert (repo / "seed" / "1" / "report" / "index.html").is_file()
    libtorch = parse(repo / "seed_libtorch" / "config.pbtxt")
    assert libtorch.backend == "pytorch" and [i.name for i in libtorch.input] == ["INPUT__0"]
    assert (repo / "seed_libtorch" / "1" / "model.pt").stat().st_size > 0
    again = run_cli("export", str(seed_bundle), "--triton", str(repo))
    assert again.returncode == 2 and "exists; use --force" in again.stderr


def test_a_version_added_to_a_model_keeps_its_config(seed_bundle, tmp_path):
    repo = tmp_path / "repo"
    assert run_cli("export", str(seed_bundle), "--triton", str(repo)).returncode == 0
    config = repo / "seed" / "config.pbtxt"
    config.write_text(config.read_text() + "version_policy: { all { } }\n")
    proc = run_cli("export", str(seed_bundle), "--triton", str(repo), "--model-version", "2")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (repo / "seed").iterdir()) == ["1", "2", "config.pbtxt"]
    assert parse(config).version_policy.WhichOneof("policy_choice") == "all"  # kept
    assert sha256_file(repo / "seed" / "2" / "model.onnx") == sha256_file(seed_bundle / "model.onnx")
    again = run_cli("export", str(seed_bundle), "--triton", str(repo), "--model-version", "2")
    assert again.returncode == 2 and "seed/2 exists; use --force" in again.stderr


def test_mlp_with_several_features_and_targets(tmp_path):
    spec = ModelSpec("mlp", 3, 2, hidden=(8,), scale_features=True, scale_targets=True)
    bundle = tmp_path / "mlp"
    write_bundle(build_model(spec), spec, ["area", "latitude", "dist_mainland"], ["ntv_rich", "tot_rich"], bundle)
    repo = tmp_path / "repo"
    proc = run_cli("export", str(bundle), "--triton", str(repo), "--name", "richness", "--max-batch-size", "64",
                   "--max-queue-delay-us", "250")
    assert proc.returncode == 0, proc.stderr
    check_entry(repo, "richness", bundle)
    # the version directory opens as the bundle it came from, its threaded graph included
    served = Predictor(repo / "richness" / "1", providers="cpu", intra_op_threads=2)
    assert set(served.engine.graphs) == {"model.onnx", "model.large_batch.onnx", "model.threaded.onnx"}
    assert served.self_check().checked


def test_the_check_can_fail(tmp_path):
    """Triton's message rejects unknown fields and wrong types, so the parse above is a real check."""
    bad = tmp_path / "config.pbtxt"
    bad.write_text('name: "m"\nmax_batch_size: 8\ndynamic_batching { max_queue_delay: 100 }\n')
    with pytest.raises(text_format.ParseError):
        parse(bad)
    bad.write_text('name: "m"\nmax_batch_size: "eight"\n')
    with pytest.raises(text_format.ParseError):
        parse(bad)


def test_bad_name_is_refused(seed_bundle, tmp_path):
    proc = run_cli("export", str(seed_bundle), "--triton", str(tmp_path / "r"), "--name", "no spaces")
    assert proc.returncode == 2 and "may only use letters" in proc.stderr
