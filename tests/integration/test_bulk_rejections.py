"""Bulk rejections against the real server: 429 answers and per-item errors are retried with
capped backoff, items that still fail go to the dead-letter file, and `teran-es ingest
--retry-failed` indexes them again.

The 429s come from a loopback proxy in front of the session's server (127.0.0.1 only): it
answers whole bulk requests with 429, or forwards a bulk request without some of its items
and answers those with per-item 429s, as a node whose write queue is full does; everything
else, the accepted items included, goes to the real server. A real queue-full rejection
cannot be provoked reliably here: the ingest sends one bulk request at a time.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from click.testing import CliRunner

from teran_es.cli import cli
from teran_es.config import save_config
from teran_es.features.columnar import ColumnarReader
from teran_es.index import IndexError_, SurrogateDocument
from teran_es.model.checkpoint import save_checkpoint
from teran_es.model.teran import build_model

pytestmark = pytest.mark.elasticsearch

REJECTION = {"type": "es_rejected_execution_exception", "reason": "rejected execution of bulk item (test proxy)"}
ES_HEADERS = {"Content-Type": "application/vnd.elasticsearch+json;compatible-with=9", "X-Elastic-Product": "Elasticsearch"}
# Not forwarded: they describe one hop (and the proxy reads bodies whole, uncompressed).
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "accept-encoding"}


class RejectingProxy:
    """A loopback HTTP proxy to a real Elasticsearch that rejects bulk work on demand.

    ``reject_requests``: the next N bulk requests are answered 429 as a whole.
    ``reject_item(doc_id, times_seen)``: per item of a bulk request, whether to answer it with a
    429 instead of forwarding it. ``bulk_log`` records (monotonic time, kind, items rejected);
    ``times_seen`` counts the bulk items received per document id.
    """

    def __init__(self, upstream: str):
        parts = urllib.parse.urlsplit(upstream)
        assert parts.hostname in ("127.0.0.1", "localhost"), "the proxy forwards to loopback only"
        self._upstream = (parts.hostname, parts.port)
        self.reject_requests = 0
        self.reject_item: Callable[[str, int], bool] = lambda doc_id, times_seen: False
        self.bulk_log: list[tuple[float, str, int]] = []
        self.times_seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the client expects

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, delayed ACKs add 40 ms each.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args) -> None:
                pass

            def handle_any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                status, headers, payload = proxy.answer(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

        return Handler

    def forward(self, method: str, path: str, headers: dict, body: bytes | None) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=120)
        try:
            kept = {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS}
            connection.request(method, path, body=body, headers=kept)
            response = connection.getresponse()
            payload = response.read()
            return response.status, {k: v for k, v in response.getheaders() if k.lower() not in HOP_HEADERS}, payload
        finally:
            connection.close()

    def answer(self, method: str, path: str, headers: dict, body: bytes | None) -> tuple[int, dict, bytes]:
        if method not in ("POST", "PUT") or not urllib.parse.urlsplit(path).path.endswith("/_bulk"):
            return self.forward(method, path, headers, body)
        lines = [line for line in (body or b"").split(b"\n") if line.strip()]
        pairs = list(zip(lines[0::2], lines[1::2], strict=True))  # the ingest sends index actions only
        with self._lock:
            if self.reject_requests > 0:
                self.reject_requests -= 1
                self.bulk_log.append((time.monotonic(), "request", len(pairs)))
                error = {"error": {"root_cause": [REJECTION], **REJECTION}, "status": 429}
                return 429, dict(ES_HEADERS), json.dumps(error).encode()
            verdicts = []
            for action, _source in pairs:
                meta = json.loads(action)["index"]
                verdicts.append((meta, self.reject_item(meta["_id"], self.times_seen[meta["_id"]])))
                self.times_seen[meta["_id"]] += 1
            self.bulk_log.append((time.monotonic(), "items", sum(rejected for _, rejected in verdicts)))
        kept = [pair for pair, (_, rejected) in zip(pairs, verdicts, strict=True) if not rejected]
        answered: list[dict] = []
        if kept:
            status, upstream_headers, payload = self.forward(
                method, path, headers, b"".join(action + b"\n" + source + b"\n" for action, source in kept)
            )
            if status != 200:
                return status, upstream_headers, payload
            answered = json.loads(payload)["items"]
        items, upstream_items = [], iter(answered)
        for meta, rejected in verdicts:
            if rejected:
                items.append({"index": {"_index": meta["_index"], "_id": meta["_id"], "status": 429, "error": REJECTION}})
            else:
                items.append(next(upstream_items))
        errors = any("error" in next(iter(item.values())) for item in items)
        return 200, dict(ES_HEADERS), json.dumps({"errors": errors, "took": 1, "items": items}).encode()


@pytest.fixture
def proxy(es_url):
    rejecting = RejectingProxy(es_url)
    yield rejecting
    rejecting.close()


def documents(n: int) -> list[SurrogateDocument]:
    return [SurrogateDocument(id=f"img-{i:04d}", terms={"p1": 1 + i % 7, f"n{i % 13}": 2}) for i in range(n)]


def fast_backoff(es_config, proxy, retries: int = 4):
    """The session's config pointed at the proxy, with backoff short enough for a test."""
    es_config.url = proxy.url
    es_config.bulk_chunk_docs = 50
    es_config.bulk_max_retries = retries
    es_config.bulk_initial_backoff = 0.05
    es_config.bulk_max_backoff = 0.2
    return es_config


def dead_letters(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_rejected_bulk_requests_are_retried_with_capped_exponential_backoff(proxy, es_config, open_es_index, tmp_path):
    index = open_es_index(config=fast_backoff(es_config, proxy))
    proxy.reject_requests = 4  # the first chunk is refused four times; the helper retries it up to 4 times
    report = index.add(documents(200))
    index.refresh()
    assert (report.indexed, report.failed, report.dead_letter_path) == (200, 0, None)
    assert index.count() == 200
    attempts = [t for t, _, _ in proxy.bulk_log[:5]]
    assert [kind for _, kind, _ in proxy.bulk_log[:5]] == ["request"] * 4 + ["items"]
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    # Waits of 0.05, 0.1, 0.2 and then 0.2 again (the cap), between attempts of the same chunk:
    # none is resent at once (the transport's own immediate retries are off for bulk).
    for gap, wait in zip(gaps, [0.05, 0.1, 0.2, 0.2], strict=True):
        assert wait * 0.9 <= gap < wait + 1.0, gaps
    assert not (tmp_path / "dead-letter.jsonl").exists()


def test_rejected_items_are_retried_and_those_that_keep_failing_go_to_the_dead_letter_file(
    proxy, es_config, open_es_index, tmp_path
):
    index = open_es_index(config=fast_backoff(es_config, proxy, retries=3))
    always = {"img-0007", "img-0123"}
    # Every tenth document is rejected twice, then accepted; two are rejected on every attempt.
    proxy.reject_item = lambda doc_id, seen: doc_id in always or (int(doc_id[4:]) % 10 == 0 and seen < 2)
    report = index.add(documents(200))
    index.refresh()
    assert (report.indexed, report.failed) == (198, 2)
    assert index.count() == 198
    assert index.existing_ids([d.id for d in documents(200)]) == {d.id for d in documents(200)} - always
    letters = dead_letters(tmp_path / "dead-letter.jsonl")
    assert report.dead_letter_path == str(tmp_path / "dead-letter.jsonl")
    assert sorted(x["id"] for x in letters) == sorted(always)
    assert all(x["status"] == 429 and "es_rejected_execution_exception" in x["error"] for x in letters)
    assert letters[0]["document"]["terms"]  # enough to see what failed, and to send it again
    # 1 + 3 retries of the two that never pass, with waits 0.05, 0.1, 0.2 (capped at 0.2).
    assert proxy.times_seen["img-0007"] == proxy.times_seen["img-0123"] == 4


def test_rejections_outlasting_the_retries_stop_with_a_clear_error(proxy, es_config, open_es_index):
    index = open_es_index(config=fast_backoff(es_config, proxy, retries=2))
    proxy.reject_requests = 100
    with pytest.raises(IndexError_, match="429") as failure:
        index.add(documents(120))
    message = str(failure.value)
    assert "overloaded" in message and "Re-run the same ingest" in message
    assert [kind for _, kind, _ in proxy.bulk_log] == ["request"] * 3  # 1 + 2 retries, then it gives up


@pytest.fixture
def ingest_through_proxy(synthetic_dataset, tiny_pipeline, tmp_path, proxy, es_admin):
    """A pipeline file (tiny random checkpoint) whose Elasticsearch is the proxy, and the ids of its images."""
    name = f"teran-test-{uuid.uuid4().hex[:12]}"
    config = tiny_pipeline(
        f"workdir={tmp_path / 'work'}",
        f"checkpoint={tmp_path / 'checkpoint'}",
        "index.backend=elasticsearch",
        f"index.name={name}",
        f"elasticsearch.url={proxy.url}",
        "elasticsearch.bulk_chunk_docs=40",
        "elasticsearch.bulk_max_retries=2",
        "elasticsearch.bulk_initial_backoff=0.05",
        "elasticsearch.bulk_max_backoff=0.1",
        "quantizer.gamma=16",
        "quantizer.doc_gamma=64",
        "quantizer.sample_size=2000",
        "ingest.device=cpu",
        "search.device=cpu",
    )
    torch.manual_seed(0)
    save_checkpoint(build_model(config.model).eval(), tmp_path / "checkpoint", config)
    pipeline = save_config(config, tmp_path / "pipeline.toml")
    ids = [r.image_id for r in ColumnarReader(synthetic_dataset.data_path).iter_records()]
    yield pipeline, ids, tmp_path / "work"
    for concrete in es_admin.indices.get(index=name, ignore_unavailable=True):  # the alias's indexes
        es_admin.indices.delete(index=concrete)


def run(*args) -> dict:
    result = CliRunner().invoke(cli, [*map(str, args), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_retry_failed_indexes_the_dead_letter_file_again_then_removes_it(
    ingest_through_proxy, synthetic_dataset, proxy
):
    pipeline, ids, workdir = ingest_through_proxy
    refused = set(ids[5:200:20])
    proxy.reject_item = lambda doc_id, seen: doc_id in refused
    first = run("ingest", synthetic_dataset.data_path, "--pipeline", pipeline)
    dead_letter = workdir / "dead-letter.jsonl"
    assert first["index_failed"] == len(refused) and first["dead_letter_path"] == str(dead_letter)
    assert first["total_in_index"] == len(ids) - len(refused) and first["total_in_store"] == len(ids)
    assert {x["id"] for x in dead_letters(dead_letter)} == refused

    # Still refused: they fail again and are the only thing in the new dead-letter file.
    still = run("ingest", "--retry-failed", "--pipeline", pipeline)
    assert (still["images"], still["indexed"], still["failed"]) == (len(refused), 0, len(refused))
    assert {x["id"] for x in dead_letters(dead_letter)} == refused
    assert not dead_letter.with_name("dead-letter.jsonl.retrying").exists()

    # The server refuses whole requests for longer than the retries last: the retry stops, and
    # the file it was working on stays for the next one.
    proxy.reject_requests = 1000
    result = CliRunner().invoke(cli, ["ingest", "--retry-failed", "--pipeline", str(pipeline)])
    assert result.exit_code == 1 and "429" in result.output
    assert dead_letter.with_name("dead-letter.jsonl.retrying").exists()

    proxy.reject_requests = 0
    proxy.reject_item = lambda doc_id, seen: False
    healed = run("ingest", "--retry-failed", "--pipeline", pipeline)
    assert (healed["images"], healed["indexed"], healed["failed"]) == (len(refused), len(refused), 0)
    assert healed["total_in_index"] == len(ids) and healed["not_in_store"] == []
    assert not dead_letter.exists() and not dead_letter.with_name("dead-letter.jsonl.retrying").exists()

    again = CliRunner().invoke(cli, ["ingest", "--retry-failed", "--pipeline", str(pipeline)])
    assert again.exit_code == 0 and "nothing to retry" in again.output
    rerun = run("ingest", synthetic_dataset.data_path, "--pipeline", pipeline)
    assert rerun["skipped_existing"] == len(ids) and rerun["total_in_index"] == len(ids)
