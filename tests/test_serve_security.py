"""Who gets in and how much: with --api-key-file every endpoint but the health checks needs the bearer
token (401 / UNAUTHENTICATED), REST and gRPC over TLS with a certificate from a CA the test makes (clients
given that CA connect, plain-text clients are refused), a server on a non-loopback address without a key
warns, and the limits on body size, requests in flight and request time answer 413, 503 with Retry-After
and 504 (RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED over gRPC). Signed-only serving: --trusted-keys."""
from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import shutil
import ssl
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tritonclient.utils import InferenceServerException

from conftest import run_cli
from servers import free_port, infer_body, infer_json, metric, request, serving

TOKEN = "s3cret-token-for-the-test-0123456789"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA and a server certificate it signed for 127.0.0.1 and localhost: (ca.pem, cert.pem, key.pem)."""
    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("torchport test CA")).issuer_name(_name("torchport test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def secured(seed_bundle, pki, tmp_path_factory):
    key_file = tmp_path_factory.mktemp("key") / "api-key"
    key_file.write_text(TOKEN + "\n")
    ca, cert, key = pki
    with serving(seed_bundle, "--api-key-file", str(key_file), "--tls-cert", str(cert), "--tls-key", str(key),
                 grpc=True, tls_ca=ca) as server:
        yield server


def _http(server, **kw):
    return httpclient.InferenceServerClient(server.url, ssl=True, ssl_options={"ca_certs": str(server.tls_ca)}, **kw)


def _tensor(module, rows):
    tensor = module.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


def test_without_the_key_only_health_answers(secured):
    rows = np.array([[3.0]], np.float32)
    http = _http(secured)
    assert http.is_server_live() and http.is_server_ready()
    for call in (lambda **h: http.get_model_metadata("seed", **h), lambda **h: http.infer("seed", [_tensor(httpclient, rows)], **h),
                 lambda **h: http.get_inference_statistics("seed", **h)):
        for headers in ({}, {"Authorization": "Bearer wrong-token-of-the-same-kind-0123"}, {"Authorization": TOKEN}):
            with pytest.raises(InferenceServerException, match="needs an API key") as err:
                call(headers=headers)
            assert err.value.status() == "401"
        assert call(headers={"Authorization": f"Bearer {TOKEN}"})
    status, headers, _ = request(secured, "GET", "/metrics")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert request(secured, "POST", "/v2/repository/index")[0] == 401

    grpc = grpcclient.InferenceServerClient(secured.grpc_url, ssl=True, root_certificates=str(secured.tls_ca))
    assert grpc.is_server_live() and grpc.is_server_ready()
    for call in (lambda **h: grpc.get_model_metadata("seed", **h), lambda **h: grpc.infer("seed", [_tensor(grpcclient, rows)], **h)):
        with pytest.raises(InferenceServerException) as err:
            call()
        assert err.value.status() == "StatusCode.UNAUTHENTICATED"
        assert call(headers={"authorization": f"Bearer {TOKEN}"})
    answer = grpc.infer("seed", [_tensor(grpcclient, rows)], headers={"authorization": f"Bearer {TOKEN}"})
    assert abs(float(answer.as_numpy("targets")[0, 0]) - 2.403) < 0.01
    text = request(secured, "GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})[2].decode()
    assert metric(text, "torchport_rejected_requests_total", reason="unauthenticated") >= 13
    http.close()
    grpc.close()


def test_tls_needs_the_ca_and_refuses_plain_text(secured):
    conn = http.client.HTTPConnection("127.0.0.1", secured.port, timeout=10)  # plain HTTP to the TLS port
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        conn.request("GET", "/v2/health/live")
        conn.getresponse().read()
    conn.close()
    with pytest.raises(ssl.SSLCertVerificationError):  # TLS without the test's CA: the certificate is unknown
        conn = http.client.HTTPSConnection("127.0.0.1", secured.port, timeout=10, context=ssl.create_default_context())
        conn.request("GET", "/v2/health/live")
    plain = grpcclient.InferenceServerClient(secured.grpc_url)
    with pytest.raises(InferenceServerException) as err:
        plain.is_server_live()
    assert err.value.status() == "StatusCode.UNAVAILABLE"
    plain.close()
    assert request(secured, "GET", "/v2/health/live")[0] == 200  # with the CA


def test_limits_each_get_their_status(seed_bundle):
    with serving(seed_bundle, "--max-concurrent-requests", "2", "--request-timeout-s", "2",
                 "--max-queue-delay-us", "5000000", "--max-body-bytes", "4096", grpc=True) as server:
        held: list = []
        threads = [threading.Thread(target=lambda v=v: held.append(infer_json(server, [[v]]))) for v in (1.0, 2.0)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while metric(request(server, "GET", "/metrics")[2].decode(), "torchport_queued_requests") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status, headers, body = request(server, "POST", "/v2/models/seed/infer", infer_body([[3.0]]))
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException) as busy:
            grpc.infer("seed", [_tensor(grpcclient, np.array([[3.0]], np.float32))])
        for t in threads:
            t.join(30)
        with pytest.raises(InferenceServerException) as late:  # alone in the batcher for 5 s: past the 2 s limit
            grpc.infer("seed", [_tensor(grpcclient, np.array([[3.0]], np.float32))])
        too_big = request(server, "POST", "/v2/models/seed/infer", infer_body([[1.0]] * 1000))
        with pytest.raises(InferenceServerException) as big:
            grpc.infer("seed", [_tensor(grpcclient, np.ones((2000, 1), np.float32))])
        text = request(server, "GET", "/metrics")[2].decode()
        grpc.close()
    assert status == 503 and headers["retry-after"] == "1" and "limit of 2 requests in flight" in json.loads(body)["error"]
    assert busy.value.status() == "StatusCode.UNAVAILABLE"
    assert [code for code, _ in held] == [504, 504] and all("limit of 2 s" in a["error"] for _, a in held)
    assert late.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert too_big[0] == 413 and big.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    labels = {"model": "seed", "version": "1"}
    assert metric(text, "torchport_requests_total", outcome="overloaded", **labels) == 2
    assert metric(text, "torchport_requests_total", outcome="timeout", **labels) == 3
    assert metric(text, "torchport_requests_total", outcome="too_large", **labels) == 1


def test_an_open_address_without_a_key_is_warned_about(seed_bundle):
    """On every interface, so with nothing loaded (explicit mode, no --load-model) and stopped at once."""
    with serving(seed_bundle, "--host", "0.0.0.0", "--model-control-mode", "explicit") as server:
        log = server.log
        assert infer_json(server, [[3.0]])[0] == 404
    assert "warning: listening on 0.0.0.0 without --api-key-file: anyone who can reach ports" in log


def test_only_signed_bundles_are_served_with_trusted_keys(seed_bundle, tmp_path):
    keys = tmp_path / "release.pem"
    assert run_cli("sign", "--new-key", str(keys)).returncode == 0
    unsigned = tmp_path / "seed"
    shutil.copytree(seed_bundle, unsigned)
    proc = run_cli("serve", str(unsigned), "--trusted-keys", f"{keys}.pub", "--port", str(free_port()))
    assert proc.returncode == 2 and "is not signed" in proc.stderr and "Traceback" not in proc.stderr
    assert run_cli("sign", str(unsigned), "--key", str(keys)).returncode == 0
    with serving(unsigned, "--trusted-keys", f"{keys}.pub") as server:
        assert infer_json(server, [[3.0]])[0] == 200
        assert "signed by key" in server.log
