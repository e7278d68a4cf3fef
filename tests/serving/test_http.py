"""The HTTP server (`python -m serving PACKAGE --port N`, serving/http.py) and its dynamic
batcher (serving/batching.py).

The batcher is tested directly with a fake model function; the app's readiness and error
paths in-process with fake models; everything else against the REAL server, started as a
deployer starts it (a subprocess on a free port) on packages exported by the real export
stage: answers equal to serving.classifier / serving.translator on the same texts, the
limits, /metrics, a bounded load test, and a graceful shutdown under SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.batching import BatcherClosed, BatchError, DynamicBatcher
from serving.classifier import OnnxClassifier, softmax
from serving.http import Settings, create_app
from serving.package import PackageError
from serving.translator import OnnxTranslator
from tests.serving.conftest import REPO, clean_env, read_manifest_json

# ---------------------------------------------------------------- the batcher, with a fake model


class FakeModel:
    """Upper-cases texts; records each call's texts and key, and the thread it ran on."""

    def __init__(self, fail_on: str = "", seconds: float = 0.0):
        self.calls: list[tuple[list[str], object]] = []
        self.threads: set[int] = set()
        self.fail_on, self.seconds = fail_on, seconds

    def __call__(self, texts, key):
        self.calls.append((list(texts), key))
        self.threads.add(threading.get_ident())
        if self.seconds:
            time.sleep(self.seconds)
        if self.fail_on and self.fail_on in texts:
            raise RuntimeError(f"cannot read {self.fail_on!r}\n  a second line that must not reach a client")
        return [f"{text.upper()}/{key}" for text in texts]


def batched(model: FakeModel, **options) -> DynamicBatcher:
    batcher = DynamicBatcher(model, **options)
    batcher.start()
    return batcher


def test_concurrent_requests_share_one_model_call_and_get_their_own_results():
    async def go():
        model = FakeModel()
        batcher = batched(model, max_batch_size=8, max_delay_ms=50)
        requests = [[f"r{r}t{t}" for t in range(2)] for r in range(3)]
        results = await asyncio.gather(*(batcher.submit(texts) for texts in requests))
        await batcher.close()
        return model, requests, results

    model, requests, results = asyncio.run(go())
    assert len(model.calls) == 1 and len(model.calls[0][0]) == 6
    assert results == [[f"{text.upper()}/None" for text in texts] for texts in requests]
    assert threading.get_ident() not in model.threads, "the model must run in a worker thread, not on the event loop"


def test_max_batch_size_is_respected_and_a_large_request_is_split_in_order():
    async def go():
        model = FakeModel()
        batcher = batched(model, max_batch_size=4, max_delay_ms=20)
        requests = [[f"r{r}t{t}" for t in range(n)] for r, n in enumerate([3, 10, 1, 3, 5])]
        results = await asyncio.gather(*(batcher.submit(texts) for texts in requests))
        await batcher.close()
        return model, requests, results

    model, requests, results = asyncio.run(go())
    assert all(len(texts) <= 4 for texts, _ in model.calls)
    assert sum(len(texts) for texts, _ in model.calls) == 22
    assert len(model.calls) == 6  # 22 texts in full calls of 4, the last one of 2
    assert [text for texts, _ in model.calls for text in texts] == [text for texts in requests for text in texts]  # FIFO
    assert results == [[f"{text.upper()}/None" for text in texts] for texts in requests]


def test_only_requests_with_the_same_key_share_a_call():
    async def go():
        model = FakeModel()
        batcher = batched(model, max_batch_size=16, max_delay_ms=30)
        keys = [1, 4, 1, 4, 1]
        results = await asyncio.gather(*(batcher.submit([f"k{key}r{i}"], key) for i, key in enumerate(keys)))
        await batcher.close()
        return model, results

    model, results = asyncio.run(go())
    assert sorted((key, len(texts)) for texts, key in model.calls) == [(1, 3), (4, 2)]
    assert results == [[f"K{k}R{i}/{k}"] for i, k in enumerate([1, 4, 1, 4, 1])]


def test_a_failing_call_fails_only_its_own_requests():
    async def go():
        model = FakeModel(fail_on="boom")
        batcher = batched(model, max_batch_size=2, max_delay_ms=10)
        outcomes = await asyncio.gather(
            batcher.submit(["a", "b"]), batcher.submit(["boom", "c"]), batcher.submit(["d", "e"]), return_exceptions=True
        )
        later = await batcher.submit(["f"])  # the batcher goes on
        await batcher.close()
        return outcomes, later

    (first, failed, third), later = asyncio.run(go())
    assert first == ["A/None", "B/None"] and third == ["D/None", "E/None"] and later == ["F/None"]
    assert isinstance(failed, BatchError)
    assert str(failed) == "RuntimeError: cannot read 'boom'"


def test_close_runs_what_is_queued_without_waiting_then_refuses():
    async def go():
        model = FakeModel()
        batcher = batched(model, max_batch_size=64, max_delay_ms=60_000)
        pending = [asyncio.ensure_future(batcher.submit([f"t{i}"])) for i in range(3)]
        await asyncio.sleep(0.05)
        assert batcher.queue_depth == 3 and not model.calls
        started = time.monotonic()
        await batcher.close()
        results = [await task for task in pending]
        with pytest.raises(BatcherClosed):
            await batcher.submit(["late"])
        return results, time.monotonic() - started

    results, seconds = asyncio.run(go())
    assert results == [["T0/None"], ["T1/None"], ["T2/None"]]
    assert seconds < 30, "close must not wait out max_delay_ms"


def test_a_cancelled_request_is_skipped():
    async def go():
        model = FakeModel()
        batcher = batched(model, max_batch_size=8, max_delay_ms=50)
        gone = asyncio.ensure_future(batcher.submit(["gone"]))
        kept = asyncio.ensure_future(batcher.submit(["kept"]))
        await asyncio.sleep(0)
        gone.cancel()
        result = await kept
        await batcher.close()
        return model, result

    model, result = asyncio.run(go())
    assert result == ["KEPT/None"] and model.calls == [(["kept"], None)]


# ---------------------------------------------------------------- the app in-process, with fake models


class FakeSession:
    def get_providers(self):
        return ["CPUExecutionProvider"]

    def get_session_options(self):
        return ort.SessionOptions()


class FakeClassifier:
    labels = ["negative", "positive"]
    manifest = {"task": "classification", "manifest_sha256": "f" * 64, "parity": {"samples": 1}}
    session = FakeSession()

    def logits(self, texts):
        if "boom" in texts:
            raise RuntimeError("onnxruntime exploded\nTraceback (most recent call last): nothing to see")
        return np.array([[0.0, 1.0] for _ in texts], dtype=np.float32)


async def in_process(app, calls):
    """Run the app's lifespan and `calls(client)` against it through httpx's ASGI transport."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await calls(client)


def test_ready_is_503_until_the_model_is_loaded():
    loaded = threading.Event()

    def loader():
        loaded.wait(30)
        return FakeClassifier()

    app = create_app("pkg", "classification", Settings(), loader=loader)

    async def calls(client):
        before = [(await client.get(path)).status_code for path in ("/health", "/ready", "/metadata")]
        early = await client.post("/v1/classify", json={"texts": ["a"]})
        loaded.set()
        for _ in range(300):
            if (await client.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.01)
        after = (await client.get("/ready")).status_code
        return before, early, after

    before, early, after = asyncio.run(in_process(app, calls))
    assert before == [200, 503, 503]
    assert early.status_code == 503 and early.json() == {"error": "the model is loading"}
    assert after == 200


def test_a_model_that_fails_to_load_is_one_line_and_never_ready():
    messages = []

    def loader():
        raise PackageError("pkg/model.onnx: onnxruntime cannot load the graph: bad\nsecond line")

    app = create_app("pkg", "classification", Settings(), loader=loader, on_load_error=messages.append)

    async def calls(client):
        for _ in range(300):
            if messages:
                break
            await asyncio.sleep(0.01)
        return await client.get("/ready")

    response = asyncio.run(in_process(app, calls))
    assert messages == ["pkg/model.onnx: onnxruntime cannot load the graph: bad"]
    assert response.status_code == 503 and "cannot load the graph" in response.json()["error"]


def test_a_failing_model_call_is_a_500_with_one_line_and_no_traceback():
    app = create_app("pkg", "classification", Settings(max_delay_ms=0), loader=FakeClassifier)

    async def calls(client):
        while (await client.get("/ready")).status_code != 200:
            await asyncio.sleep(0.01)
        return await client.post("/v1/classify", json={"texts": ["boom"]}), await client.post("/v1/classify", json={"texts": ["ok"]})

    failed, ok = asyncio.run(in_process(app, calls))
    assert failed.status_code == 500
    assert failed.json() == {"error": "the model call failed: RuntimeError: onnxruntime exploded"}
    assert ok.status_code == 200 and ok.json()["results"][0]["label"] == "positive"


class StrictTokenizerClassifier(FakeClassifier):
    """Refuses what the real tokenizer refuses: a text that is not encodable as UTF-8."""

    def logits(self, texts):
        for text in texts:
            text.encode("utf-8")
        return super().logits(texts)


def test_a_lone_surrogate_is_a_422_naming_the_text_and_fails_no_other_request():
    # JSON lets "\ud800" through as a one-character string the tokenizer cannot take: in a
    # model call it failed every request batched with it (a 500 for all of them).
    app = create_app("pkg", "classification", Settings(max_delay_ms=200), loader=StrictTokenizerClassifier)
    bad = b'{"texts": ["fine", "a \\ud800 b"]}'

    async def calls(client):
        while (await client.get("/ready")).status_code != 200:
            await asyncio.sleep(0.01)
        good = [client.post("/v1/classify", json={"texts": [f"good {i}"]}) for i in range(4)]
        sent = client.post("/v1/classify", content=bad, headers={"content-type": "application/json"})
        return await asyncio.gather(sent, *good)

    refused, *answered = asyncio.run(in_process(app, calls))
    assert refused.status_code == 422, refused.text
    assert refused.json() == {"error": "texts[1] is not valid Unicode: a lone surrogate (U+D800) at character 2; "
                                       "send the character's full escape pair, or UTF-8"}
    assert [response.status_code for response in answered] == [200] * 4
    paired = b'{"texts": ["\\ud83d\\ude00 great"]}'  # a full escape pair is one character, and fine

    async def emoji(client):
        while (await client.get("/ready")).status_code != 200:
            await asyncio.sleep(0.01)
        return await client.post("/v1/classify", content=paired, headers={"content-type": "application/json"})

    assert asyncio.run(in_process(create_app("pkg", "classification", Settings(), loader=StrictTokenizerClassifier),
                                  emoji)).status_code == 200


def test_the_body_limit_takes_escaped_emoji_and_bounds_a_chunked_body():
    # Python's json.dumps (and `requests`) escape a character outside the BMP as a 12-byte pair:
    # a request within --max-texts and --max-chars was refused as too large. A body sent without
    # Content-Length (chunked) was read whole, however large.
    settings = Settings(max_texts=8, max_chars=2000)
    app = create_app("pkg", "classification", settings, loader=FakeClassifier)
    escaped = json.dumps({"texts": ["\U0001F600" * 2000] * 8}).encode()  # within both limits
    assert len(escaped) > 6 * 8 * 2000 + 65536  # over the old bound of 6 bytes a character
    pulled = []

    async def chunks(body: bytes, size: int = 10_000):
        for start in range(0, len(body), size):
            pulled.append(start)
            yield body[start : start + size]

    async def endless():
        yield b'{"texts": ["'
        for _ in range(10_000):  # 10 MB
            pulled.append(1)
            yield b"a" * 1000

    async def calls(client):
        while (await client.get("/ready")).status_code != 200:
            await asyncio.sleep(0.01)
        headers = {"content-type": "application/json"}
        whole = await client.post("/v1/classify", content=escaped, headers=headers)
        chunked = await client.post("/v1/classify", content=chunks(escaped), headers=headers)
        pulled.clear()
        huge = await client.post("/v1/classify", content=endless(), headers=headers)
        return whole, chunked, huge

    whole, chunked, huge = asyncio.run(in_process(app, calls))
    assert whole.status_code == 200 and len(whole.json()["results"]) == 8, whole.text
    assert chunked.status_code == 200 and len(chunked.json()["results"]) == 8, chunked.text
    limit = 12 * 8 * 2000 + 65536
    assert huge.status_code == 413, huge.text
    assert huge.json() == {"error": f"the request body has more than {limit} bytes; the limit is {limit} (from --max-texts and --max-chars)"}
    assert len(pulled) <= limit // 1000 + 2, "a chunked body is read up to the limit, not on"


# ---------------------------------------------------------------- the real server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Running:
    """`python -m serving PACKAGE --port N --host 127.0.0.1 [args]`, its output in a file (a pipe
    nobody reads would fill up and stall the server)."""

    def __init__(self, package: Path, log: Path, args=()):
        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        self.handle = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", str(package), "--port", str(self.port), "--host", "127.0.0.1", *args],
            cwd=REPO, env=clean_env(), stdout=self.handle, stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        if not self.handle.closed:
            self.handle.flush()
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited with {self.process.returncode}:\n{self.output()}"
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"/ready not 200 within {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.handle.close()


def serving(package, tmp_path_factory, name: str):
    """A real server on the package for a module's tests; stopped at teardown."""
    server = Running(package, tmp_path_factory.mktemp("http") / f"{name}.log", ["--no-access-log"])
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def classify_server(classification_package, tmp_path_factory):
    yield from serving(classification_package, tmp_path_factory, "classify")


@pytest.fixture(scope="module")
def translate_server(translation_package, tmp_path_factory):
    yield from serving(translation_package, tmp_path_factory, "translate")


def post(server: Running, path: str, body=None, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kwargs)


def metric_samples(server: Running) -> dict[tuple, float]:
    """/metrics as {(sample name, sorted labels): value}."""
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_health_ready_and_metadata(classify_server, classification_package):
    assert httpx.get(f"{classify_server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{classify_server.url}/ready").status_code == 200
    meta = httpx.get(f"{classify_server.url}/metadata").json()
    manifest = read_manifest_json(classification_package)
    classifier = OnnxClassifier(classification_package)
    assert meta["task"] == "classification"
    assert meta["labels"] == classifier.labels
    assert meta["package"] == str(Path(classification_package).resolve())
    assert meta["manifest_sha256"] == manifest["manifest_sha256"]
    assert meta["export_metrics"]["parity"] == manifest["parity"]
    assert meta["providers"] == classifier.session.get_providers()
    assert meta["precision"] == getattr(classifier, "precision", "fp32")
    assert meta["threads"] is None  # no --threads: onnxruntime's default
    assert meta["limits"] == {"max_batch_size": 32, "max_delay_ms": 5.0, "max_texts": 64, "max_chars": 2000}


def test_classify_gives_the_runtimes_labels_and_probabilities(classify_server, classification_package, classification_texts):
    response = post(classify_server, "/v1/classify", {"texts": classification_texts})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    classifier = OnnxClassifier(classification_package)
    assert [row["label"] for row in results] == classifier.predict(classification_texts)
    assert {row["label"] for row in results} == set(classifier.labels), "a one-class answer would make this weak"
    logits = classifier.logits(classification_texts).astype(np.float64)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    probabilities = np.array([[row["probabilities"][label] for label in classifier.labels] for row in results])
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)


def test_the_other_tasks_endpoint_is_refused(classify_server, translate_server):
    refused = post(classify_server, "/v1/translate", {"texts": ["A man rides a bike."]})
    assert refused.status_code == 409
    assert "classification package" in refused.json()["error"] and "/v1/classify" in refused.json()["error"]
    refused = post(translate_server, "/v1/classify", {"texts": ["great value"]})
    assert refused.status_code == 409
    assert "translation package" in refused.json()["error"] and "/v1/translate" in refused.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"texts": ["ok"] * 65}, 413, ["65", "64", "--max-texts"]),
        ({"texts": ["ok", "fine", "x" * 2001]}, 413, ["texts[2]", "2001", "2000", "--max-chars"]),
        ({"texts": ["ok", "fine", "good", " \t "]}, 422, ["texts[3] is empty"]),
        ({"texts": ["ok", "\u200b\ufeff\u00ad"]}, 422, ["texts[1] is empty"]),  # only invisible characters
        ({"texts": []}, 422, ["texts is empty"]),
        ({"text": ["ok"]}, 422, ["texts: Field required", "text: unknown field"]),
        ({"texts": "ok"}, 422, ["texts:", "list"]),
        ({"texts": ["ok", 5]}, 422, ["texts[1]:", "string"]),
        ([1, 2], 422, ["request body:"]),
        ((b'{"texts": ["ok"', "application/json"), 422, ["not valid JSON"]),
        ((b"texts=ok", "application/x-www-form-urlencoded"), 422, ["JSON object", "application/json"]),
        ((b'{"texts": ["ok", "\\ud800"]}', "application/json"), 422, ["texts[1]", "lone surrogate (U+D800)"]),
    ],
    ids=["too-many-texts", "too-long", "blank", "invisible", "no-texts", "missing-field", "not-a-list", "not-a-string",
         "not-an-object", "malformed-json", "not-json", "lone-surrogate"],
)
def test_bad_requests_name_the_limit_or_the_field(classify_server, body, status, words):
    if isinstance(body, tuple):
        content, content_type = body
        response = httpx.post(f"{classify_server.url}/v1/classify", content=content,
                              headers={"content-type": content_type}, timeout=30)
    else:
        response = post(classify_server, "/v1/classify", body)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    for word in words:
        assert word in response.json()["error"], (word, response.json())


def test_no_error_carries_a_traceback(classify_server, translate_server):
    responses = [
        httpx.get(f"{classify_server.url}/no/such/path"),
        httpx.get(f"{classify_server.url}/v1/classify"),
        post(translate_server, "/v1/translate", {"texts": ["A man."], "num_beams": 0}),
        post(translate_server, "/v1/translate", {"texts": ["A man."], "num_beams": "3"}),
        httpx.post(f"{classify_server.url}/v1/classify", content=b"x" * 2_000_000, timeout=30),
    ]
    assert [r.status_code for r in responses] == [404, 405, 422, 422, 413]
    for response in responses:
        assert set(response.json()) == {"error"} and "Traceback" not in response.text
    assert "num_beams" in responses[2].json()["error"] and "num_beams" in responses[3].json()["error"]


def test_translate_gives_the_runtimes_translations(translate_server, translation_package, translation_texts):
    translator = OnnxTranslator(translation_package)
    response = post(translate_server, "/v1/translate", {"texts": translation_texts})
    assert response.status_code == 200, response.text
    assert [row["translation"] for row in response.json()["results"]] == translator.translate(
        translation_texts, **translator.decoding())
    greedy = post(translate_server, "/v1/translate", {"texts": translation_texts, "num_beams": 1})
    expected = translator.translate(translation_texts, **translator.decoding(num_beams=1))
    assert [row["translation"] for row in greedy.json()["results"]] == expected
    assert len(set(expected)) > 3, "outputs must depend on the input for this comparison to mean much"
    meta = httpx.get(f"{translate_server.url}/metadata").json()
    manifest = read_manifest_json(translation_package)
    assert meta["task"] == "translation" and meta["languages"] == manifest["languages"]
    assert meta["export_metrics"] == {"gate": manifest["gate"]}
    assert meta["decoding"]["num_beams"] == manifest["generation"]["num_beams"]
    assert meta["threads"] == translator.encoder.get_session_options().intra_op_num_threads
    assert meta["kv_cache"] == "host", "a CPU server keeps the KV cache in numpy"
    assert meta["search"] == "graph", "the package has search.onnx"


def test_metrics_count_requests_by_endpoint_and_status(classify_server):
    before = metric_samples(classify_server)
    post(classify_server, "/v1/classify", {"texts": ["great value"]})
    post(classify_server, "/v1/classify", {"texts": [" "]})
    after = metric_samples(classify_server)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("serving_requests_total", endpoint="/v1/classify", status="200") == 1
    assert delta("serving_requests_total", endpoint="/v1/classify", status="422") == 1
    assert delta("serving_request_duration_seconds_count", endpoint="/v1/classify") == 2
    assert delta("serving_batch_texts_count") == 1
    assert ("serving_queue_depth", ()) in after


CLIENTS, REQUESTS_EACH = 32, 50


def test_load_32_clients_get_every_answer_and_requests_are_batched(classify_server, classification_package,
                                                                   classification_texts):
    """32 concurrent clients x 50 single-text requests: no errors, every answer right, and
    fewer model calls than requests. Latency and throughput are printed, not asserted."""
    expected = dict(zip(classification_texts, OnnxClassifier(classification_package).predict(classification_texts)))
    before = metric_samples(classify_server)

    async def client_loop(client: httpx.AsyncClient, number: int) -> list[tuple[float, str, str, int]]:
        out = []
        for i in range(REQUESTS_EACH):
            text = classification_texts[(number * REQUESTS_EACH + i) % len(classification_texts)]
            started = time.perf_counter()
            response = await client.post("/v1/classify", json={"texts": [text]})
            label = response.json()["results"][0]["label"] if response.status_code == 200 else response.text
            out.append((time.perf_counter() - started, text, label, response.status_code))
        return out

    async def load():
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=classify_server.url, limits=limits, timeout=60) as client:
            started = time.perf_counter()
            results = await asyncio.gather(*(client_loop(client, n) for n in range(CLIENTS)))
            return [row for rows in results for row in rows], time.perf_counter() - started

    rows, seconds = asyncio.run(load())
    after = metric_samples(classify_server)
    assert len(rows) == CLIENTS * REQUESTS_EACH
    assert [status for *_, status in rows if status != 200] == []
    assert all(label == expected[text] for _, text, label, _ in rows)
    latencies = sorted(latency for latency, *_ in rows)
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]
    calls = after[("serving_batch_requests_count", ())] - before[("serving_batch_requests_count", ())]
    singles = after[("serving_batch_requests_bucket", (("le", "1.0"),))] - before[("serving_batch_requests_bucket", (("le", "1.0"),))]
    print(f"\nload: {len(rows)} requests from {CLIENTS} clients in {seconds:.2f}s: {len(rows) / seconds:.0f} req/s, "
          f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; {calls:.0f} model calls "
          f"({len(rows) / calls:.1f} requests per call), {singles:.0f} of them with a single request")
    assert calls < len(rows), "concurrent requests must share model calls"
    assert singles < calls, "some model call must have held more than one request's texts"


def point(follow: Path, version: str) -> None:
    """What flows.release sync does: DIR/current replaced atomically by a link to `version`."""
    temporary = follow / f".current.{version}"
    temporary.symlink_to(version)
    os.replace(temporary, follow / "current")


def test_follow_swaps_the_model_under_load_with_no_error_and_refuses_a_broken_one(
    classification_package, classification_texts, tmp_path
):
    """--follow DIR: 8 clients keep sending while DIR/current moves v1 -> v2: every request is
    answered, each by v1 or v2, v2 after the swap; a package that fails its hash check is
    refused in one log line and v2 keeps serving."""
    follow = tmp_path / "registry"
    for version in ("v1.0.0", "v2.0.0", "v3.0.0"):
        shutil.copytree(classification_package, follow / version)
    with (follow / "v3.0.0" / "model.onnx").open("ab") as handle:
        handle.write(b"tampered")
    point(follow, "v1.0.0")
    server = Running(tmp_path / "ignored", tmp_path / "follow.log",
                     ["--no-access-log", "--follow", str(follow), "--follow-interval", "0.2"])
    try:
        server.wait_ready()
        assert httpx.get(f"{server.url}/metadata").json()["model_version"] == "v1.0.0"

        async def client_loop(client: httpx.AsyncClient, number: int) -> list[tuple[int, str]]:
            out = []
            for i in range(40):
                response = await client.post("/v1/classify", json={"texts": [classification_texts[(number + i) % 20]]})
                out.append((response.status_code, response.json().get("model_version", response.text)))
                if number == 0 and i == 10:
                    point(follow, "v2.0.0")
            return out

        async def load():
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                return await asyncio.gather(*(client_loop(client, n) for n in range(8)))

        answers = [row for rows in asyncio.run(load()) for row in rows]
        assert [row for row in answers if row[0] != 200] == []
        assert {version for _, version in answers} == {"v1.0.0", "v2.0.0"}
        assert [version for _, version in asyncio.run(load())[0]][-1] == "v2.0.0"
        point(follow, "v3.0.0")
        time.sleep(1.5)
        assert post(server, "/v1/classify", {"texts": ["great"]}).json()["model_version"] == "v2.0.0"
        assert httpx.get(f"{server.url}/metadata").json()["model_version"] == "v2.0.0"
    finally:
        server.stop()
    log = server.output()
    assert "Follow: swapped v1.0.0 -> v2.0.0" in log
    refused = [line for line in log.splitlines() if "v3.0.0 failed to load, still serving v2.0.0" in line]
    assert len(refused) == 1 and "Traceback" not in log, log


def test_a_bad_package_at_startup_is_one_line_and_exit_1(classification_package, package_copy):
    broken = package_copy(classification_package)
    with (broken / "model.onnx").open("ab") as handle:
        handle.write(b"tampered")
    result = subprocess.run([sys.executable, "-m", "serving", str(broken), "--port", str(free_port())], cwd=REPO,
                            env=clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: serve: "), result.stderr
    assert "model.onnx" in result.stderr and "sha256" in result.stderr and result.stdout == ""


def test_precision_and_threads_reach_the_server(classification_package, classification_texts, tmp_path):
    """One text per request, one request at a time: dynamic INT8 scales its activations per
    model call, so only a text that has its call to itself compares exactly."""
    texts = classification_texts[:8]
    server = Running(classification_package, tmp_path / "int8.log", ["--precision", "int8", "--threads", "2", "--no-access-log"])
    try:
        server.wait_ready()
        meta = httpx.get(f"{server.url}/metadata").json()
        results = [post(server, "/v1/classify", {"texts": [text]}).json()["results"][0] for text in texts]
    finally:
        server.stop()
    assert (meta["precision"], meta["threads"]) == ("int8", 2)
    int8, fp32 = OnnxClassifier(classification_package, precision="int8"), OnnxClassifier(classification_package)
    served = np.array([[row["probabilities"][label] for label in int8.labels] for row in results])
    expected = np.concatenate([softmax(int8.logits([text])) for text in texts])
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert np.abs(served - np.concatenate([softmax(fp32.logits([text])) for text in texts])).max() > 1e-5, \
        "the INT8 graph must be the one that answered"


def test_a_port_in_use_is_one_line_and_exit_1(classification_package):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "serving", str(classification_package), "--port", str(port),
                                 "--host", "127.0.0.1"], cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"error: serve: cannot listen on 127.0.0.1:{port}: address already in use\n"
    assert result.stdout == ""


def test_sigterm_lets_in_flight_requests_finish_and_exits_0(classification_package, classification_texts, tmp_path):
    """Requests queued in the batcher (which would wait 60 s for company) when SIGTERM comes:
    each is answered, then the process exits 0."""
    server = Running(classification_package, tmp_path / "shutdown.log", ["--max-delay-ms", "60000", "--max-batch-size", "64"])
    texts = classification_texts[:8]
    try:
        server.wait_ready()

        async def scenario():
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                pending = [asyncio.ensure_future(client.post("/v1/classify", json={"texts": [text]})) for text in texts]
                for _ in range(400):  # until all 8 texts wait in the queue: the requests are in flight
                    depth = await client.get("/metrics")
                    if "serving_queue_depth 8.0" in depth.text:
                        break
                    await asyncio.sleep(0.05)
                assert "serving_queue_depth 8.0" in depth.text, depth.text
                server.process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*pending)

        responses = asyncio.run(scenario())
        code = server.process.wait(timeout=30)
    finally:
        server.stop()
    assert [r.status_code for r in responses] == [200] * len(texts), [r.text for r in responses]
    expected = OnnxClassifier(classification_package).predict(texts)
    assert [r.json()["results"][0]["label"] for r in responses] == expected
    assert code == 0, server.output()
    assert "Traceback" not in server.output()
