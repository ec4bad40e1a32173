"""HTTP manners and the specifications, checked by an independent client against a real server on
127.0.0.1: schemathesis runs the Open Inference Protocol's own REST spec (tests/data/open_inference_rest.yaml,
from open-inference/open-inference-protocol, Apache-2.0) with the checks not_a_server_error,
unsupported_method, content_type_conformance, response_schema_conformance and response_headers_conformance,
then torchport's own OpenAPI document (/openapi.json, which also lists the statuses the protocol's spec leaves
out) with status_code_conformance too; HEAD is answered wherever GET is, and 405 carries Allow."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from conftest import BIN, DATA
from servers import request, serving

CHECKS = ("not_a_server_error,unsupported_method,content_type_conformance,response_schema_conformance,"
          "response_headers_conformance")


def _schemathesis(location: str, server, checks: str, seconds: int, cwd) -> tuple[int, str, int]:
    """Run schemathesis for at most ``seconds`` (its whole run) in ``cwd`` (where it keeps its cache); (exit
    code, output, test cases passed)."""
    proc = subprocess.run([str(BIN / "schemathesis"), "--config-file", str(DATA / "schemathesis.toml"), "--no-color",
                           "run", location, "--url", f"http://{server.url}", "--checks", checks,
                           "--max-time", str(seconds), "--seed", "24"],
                          capture_output=True, text=True, timeout=seconds + 60, cwd=cwd)
    found = re.search(r"(\d+) generated, (\d+) passed", proc.stdout)
    return proc.returncode, proc.stdout + proc.stderr, int(found.group(2)) if found else 0


@pytest.mark.full  # a server under load: the full tier
def test_the_protocols_spec_and_torchports_own_document_hold(seed_bundle, tmp_path):
    with serving(seed_bundle, "--model-control-mode", "explicit", "--load-model", "seed") as server:
        code, output, passed = _schemathesis(str(DATA / "open_inference_rest.yaml"), server, CHECKS, 40, tmp_path)
        assert code == 0 and passed >= 300, output[-4000:]
        own, own_output, own_passed = _schemathesis(f"http://{server.url}/openapi.json", server,
                                                    CHECKS + ",status_code_conformance", 15, tmp_path)
        assert own == 0 and own_passed >= 100, own_output[-4000:]
        assert "Traceback" not in server.log
    print(f"schemathesis: {passed} cases on the protocol's spec, {own_passed} on /openapi.json, all passed")


def test_head_wherever_get_and_405_with_allow(seed_bundle):
    with serving(seed_bundle) as server:
        for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/seed", "/v2/models/seed/ready",
                     "/metrics", "/openapi.json"):
            get, head = request(server, "GET", path), request(server, "HEAD", path)
            assert get[0] == head[0] == 200 and head[2] == b"", path
            assert head[1]["content-length"] == get[1]["content-length"] == str(len(get[2])), path
        for method, path, allow in (("POST", "/v2/health/live", "GET, HEAD"), ("PUT", "/v2", "GET, HEAD"),
                                    ("GET", "/v2/models/seed/infer", "POST"),
                                    ("DELETE", "/v2/models/seed/versions/1/infer", "POST"),
                                    ("HEAD", "/v2/repository/index", "POST"), ("OPTIONS", "/metrics", "GET, HEAD")):
            status, headers, body = request(server, method, path)
            assert status == 405 and headers["allow"] == allow, (method, path, status, headers)
            if method != "HEAD":
                assert f"takes {allow}, not {method}" in json.loads(body)["error"]
        document = json.loads(request(server, "GET", "/openapi.json")[2])
        infer = document["paths"]["/v2/models/{MODEL_NAME}/infer"]["post"]["responses"]
        assert {"200", "400", "401", "404", "413", "503", "504"} <= set(infer)
        # an encoded '/' stays inside its segment: a model named 'seed/infer', not an infer path
        assert request(server, "GET", "/v2/models/seed%2Finfer")[0] == 404
