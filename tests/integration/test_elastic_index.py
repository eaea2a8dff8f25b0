"""ElasticIndex against a real Elasticsearch: lifecycle, bad input, exact scores, lost connections."""

from __future__ import annotations

import json
import socket
import threading

import numpy as np
import pytest

from teran_es.config import ElasticsearchConfig
from teran_es.index.base import (
    Index,
    IndexMismatchError,
    IndexUnavailableError,
    InvalidDocumentError,
    SurrogateDocument,
)

pytestmark = pytest.mark.elasticsearch

FINGERPRINTS = {"quantizer_fingerprint": "quant-aaaa", "model_fingerprint": "model-bbbb"}


def make_docs(rng: np.random.Generator, n: int, vocab: int = 500, max_terms: int = 60, prefix: str = "img"):
    docs = []
    for i in range(n):
        terms = rng.choice(vocab, size=int(rng.integers(1, max_terms)), replace=False)
        tfs = rng.integers(1, 513, size=terms.size)
        docs.append(
            SurrogateDocument(
                id=f"{prefix}{i:05d}",
                terms={f"t{t}": int(f) for t, f in zip(terms, tfs, strict=True)},
                path=f"/images/{i}.jpg",
                caption=f"a photo number {i}",
                metadata={"source": "test", "n": i},
            )
        )
    return docs


def dot(doc: SurrogateDocument, query: dict[str, float]) -> float:
    return float(sum(tf * query.get(term, 0.0) for term, tf in doc.terms.items()))


def test_open_creates_the_index_with_fingerprints_and_checks_them_on_reopen(open_es_index, index_name):
    index = open_es_index(index_name, meta=FINGERPRINTS)
    assert isinstance(index, Index)
    meta = index.meta()
    assert meta["quantizer_fingerprint"] == "quant-aaaa" and meta["model_fingerprint"] == "model-bbbb"
    assert meta["mapping"] == "image-index" and meta["mapping_version"] == 2

    again = open_es_index(index_name, create=False, meta=FINGERPRINTS)
    assert again.meta()["quantizer_fingerprint"] == "quant-aaaa"
    # No expectation means no check (e.g. a maintenance tool that only counts).
    assert open_es_index(index_name, create=False).count() == 0

    with pytest.raises(IndexMismatchError, match="quantizer_fingerprint=quant-aaaa"):
        open_es_index(index_name, meta={**FINGERPRINTS, "quantizer_fingerprint": "quant-other"})


def test_open_without_create_fails_clearly_when_missing(open_es_index, index_name):
    with pytest.raises(IndexUnavailableError, match="does not exist"):
        open_es_index(index_name, create=False)


def test_an_index_that_is_not_ours_is_refused(open_es_index, es_admin, index_name):
    es_admin.indices.create(index=index_name, mappings={"properties": {"terms": {"type": "keyword"}}})
    with pytest.raises(IndexMismatchError, match="not a teran-es image index"):
        open_es_index(index_name)


def test_add_get_count_delete_refresh(open_es_index):
    rng = np.random.default_rng(1)
    docs = make_docs(rng, 450)
    index = open_es_index(meta=FINGERPRINTS)
    report = index.add(docs)
    assert (report.indexed, report.failed, report.dead_letter_path) == (450, 0, None)
    index.refresh()
    assert index.count() == 450

    got = index.get("img00007")
    assert got == docs[7]
    assert all(isinstance(tf, int) for tf in got.terms.values())
    assert index.get("no-such-id") is None
    shown = index.get_many(["img00007", "no-such-id", "img00449"])
    assert set(shown) == {"img00007", "img00449"}
    for doc_id, position in (("img00007", 7), ("img00449", 449)):
        # what a hit shows, without the terms
        assert (shown[doc_id].path, shown[doc_id].caption) == (docs[position].path, docs[position].caption)
        assert dict(shown[doc_id].terms) == {}

    assert index.existing_ids(["img00001", "img00449", "nope"]) == {"img00001", "img00449"}
    assert index.delete(["img00001", "img00002", "nope"]) == 2
    index.refresh()
    assert index.count() == 448
    assert index.get("img00001") is None
    assert not any(h.id == "img00001" for h in index.search(docs[1].terms, 448))


def test_re_adding_the_same_ids_is_idempotent(open_es_index):
    rng = np.random.default_rng(2)
    docs = make_docs(rng, 300)
    index = open_es_index()
    index.add(docs)
    changed = [SurrogateDocument(id=d.id, terms={"t1": 5}, caption="replaced") for d in docs[:10]]
    report = index.add([*docs[10:], *changed])
    assert report.indexed == 300
    index.refresh()
    assert index.count() == 300
    assert index.get(docs[3].id).terms == {"t1": 5}


def test_rejected_documents_go_to_the_dead_letter_file_and_the_rest_is_indexed(open_es_index, tmp_path):
    rng = np.random.default_rng(3)
    good = make_docs(rng, 250)
    dead_letter = tmp_path / "rejects.jsonl"
    bad = [
        SurrogateDocument(id="bad-term", terms={"t.1": 3}),  # a dot would be an object path to ES
        SurrogateDocument(id="bad-tf", terms={"t1": 513}),  # not stored exactly
        # Valid terms, but the server rejects a caption that is an object: a bulk item failure.
        SurrogateDocument(id="bad-caption", terms={"t1": 3}, caption={"not": "text"}),  # type: ignore[arg-type]
    ]
    index = open_es_index(dead_letter_path=dead_letter)
    report = index.add([*good[:100], *bad, *good[100:]])
    assert (report.indexed, report.failed) == (250, 3)
    assert report.dead_letter_path == str(dead_letter)
    records = [json.loads(line) for line in dead_letter.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["bad-caption", "bad-term", "bad-tf"]
    by_id = {r["id"]: r for r in records}
    assert "not allowed" in by_id["bad-term"]["error"]
    assert "outside 1..512" in by_id["bad-tf"]["error"]
    assert "document_parsing_exception" in by_id["bad-caption"]["error"] or "parsing" in by_id["bad-caption"]["error"]
    assert by_id["bad-caption"]["status"] == 400
    assert by_id["bad-caption"]["document"]["terms"] == {"t1": 3}
    index.refresh()
    assert index.count() == 250

    # Appends: a second bad batch adds lines, keeps the first ones.
    index.add([SurrogateDocument(id="bad-again", terms={"-x": 1})])
    assert len(dead_letter.read_text().splitlines()) == 4


@pytest.mark.parametrize("formulation", ["bool", "sparse_vector"])
def test_scores_are_the_exact_dot_product(open_es_index, formulation):
    """Integer frequencies up to 512 are stored exactly; the score is tf x weight summed in float32."""
    rng = np.random.default_rng(4)
    tfs = [1, 2, 3, 255, 256, 257, 300, 333, 499, 500, 509, 510, 511, 512]
    docs = [SurrogateDocument(id=f"single{tf:03d}", terms={"solo": tf}) for tf in tfs]
    docs += make_docs(rng, 300, vocab=200, max_terms=120)
    index = open_es_index(formulation=formulation)
    index.add(docs)
    index.refresh()

    weight = 0.7310585786
    for hit in index.search({"solo": weight}, len(tfs)):
        tf = int(hit.id.removeprefix("single"))
        assert hit.score == pytest.approx(float(np.float32(tf) * np.float32(weight)), rel=1e-7)

    by_id = {d.id: d for d in docs}
    for _ in range(10):
        terms = rng.choice(200, size=80, replace=False)
        query = {f"t{t}": float(w) for t, w in zip(terms, rng.uniform(0.001, 5.0, size=80), strict=True)}
        hits = index.search(query, 50)
        assert len(hits) == 50
        for hit in hits:
            assert hit.score == pytest.approx(dot(by_id[hit.id], query), rel=1e-5)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_many_equals_search_across_msearch_batches(open_es_index):
    rng = np.random.default_rng(5)
    docs = make_docs(rng, 400)
    index = open_es_index()  # msearch_batch=16 in the test config: 40 queries = 3 requests
    index.add(docs)
    index.refresh()
    queries = []
    for _ in range(40):
        terms = rng.choice(500, size=30, replace=False)
        queries.append({f"t{t}": float(w) for t, w in zip(terms, rng.uniform(0.1, 2.0, size=30), strict=True)})
    batched = index.search_many(queries, 12)
    assert len(batched) == 40
    for query, hits in zip(queries, batched, strict=True):
        assert hits == index.search(query, 12)
    assert index.search_many(queries[:2], 0) == [[], []]


def test_bad_queries_are_refused_before_reaching_the_server(open_es_index):
    index = open_es_index()
    with pytest.raises(InvalidDocumentError):
        index.search({}, 10)
    with pytest.raises(InvalidDocumentError):
        index.search({"t1": -1.0}, 10)
    with pytest.raises(InvalidDocumentError):
        index.search_many([{"t1": 1.0}, {"a b": 1.0}], 10)


def test_a_wrong_url_for_an_existing_server_path_is_a_clear_error(es_url):
    from teran_es.index.elastic import ElasticIndex

    config = ElasticsearchConfig(url=es_url.rstrip("/") + "/not-a-prefix", request_timeout=10)
    with pytest.raises(IndexUnavailableError, match="Is the URL that of an Elasticsearch server"):
        ElasticIndex.open(config, "teran-test-never-created")


class _KillableProxy:
    """A TCP proxy in front of the server that can be cut, as a crashed server or network would."""

    def __init__(self, target_host: str, target_port: int):
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._dead = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                if self._dead:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def kill(self) -> None:
        with self._lock:
            self._dead = True
            self._listener.close()
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


def test_a_lost_connection_mid_ingest_keeps_what_was_acknowledged_and_rerunning_completes(
    open_es_index, es_config, es_url, index_name, tmp_path
):
    from urllib.parse import urlsplit

    target = urlsplit(es_url)
    if target.scheme != "http":
        pytest.skip("the proxy speaks plain TCP to a local http server only")
    proxy = _KillableProxy(target.hostname, target.port)
    via_proxy = ElasticsearchConfig(url=f"http://127.0.0.1:{proxy.port}", bulk_chunk_docs=100, request_timeout=10)
    docs = make_docs(np.random.default_rng(6), 1000)

    def stream():
        for i, doc in enumerate(docs):
            if i == 550:
                proxy.kill()
            yield doc

    index = open_es_index(index_name, config=via_proxy)
    with pytest.raises(IndexUnavailableError, match="were acknowledged and stay indexed") as caught:
        index.add(stream())
    assert "Re-run the same ingest" in str(caught.value)

    direct = open_es_index(index_name, create=False)
    direct.refresh()
    acknowledged = direct.count()
    assert 400 <= acknowledged <= 600
    report = direct.add(docs)
    assert report.failed == 0
    direct.refresh()
    assert direct.count() == 1000
    assert not (tmp_path / "dead-letter.jsonl").exists()
