"""Parity: the embedded backend and Elasticsearch return the same top-k, with the same scores,
as a brute-force numpy dot product, for the same seeded documents and queries.

Elasticsearch accumulates scores in float32, so scores agree to ~1e-6 relative and two
documents whose exact scores differ by less than that may swap places; the comparison is
therefore tie-tolerant (see ``assert_same_top_k``), while well-separated ranks must match
exactly.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from teran_es.index.base import IndexHit, SurrogateDocument

pytestmark = pytest.mark.elasticsearch

N_DOCS = 2000
VOCAB = 2000
N_QUERIES = 50
QUERY_TERMS = 200
RTOL = 1e-5


@pytest.fixture(scope="module")
def corpus():
    """Seeded documents (50..300 distinct terms, tf 1..512), queries, and the dense matrices."""
    rng = np.random.default_rng(20240601)
    docs = []
    matrix = np.zeros((N_DOCS, VOCAB), dtype=np.float64)
    for i in range(N_DOCS):
        terms = rng.choice(VOCAB, size=int(rng.integers(50, 301)), replace=False)
        tfs = rng.integers(1, 513, size=terms.size)
        matrix[i, terms] = tfs
        docs.append(
            SurrogateDocument(id=f"doc-{i:05d}", terms={f"w{t}": int(f) for t, f in zip(terms, tfs, strict=True)})
        )
    queries = []
    weights = np.zeros((N_QUERIES, VOCAB), dtype=np.float64)
    for q in range(N_QUERIES):
        terms = rng.choice(VOCAB, size=QUERY_TERMS, replace=False)
        values = rng.uniform(0.01, 2.0, size=QUERY_TERMS)
        weights[q, terms] = values
        queries.append({f"w{t}": float(v) for t, v in zip(terms, values, strict=True)})
    exact = weights @ matrix.T  # [queries, docs]
    return docs, queries, exact


def assert_same_top_k(hits: list[IndexHit], exact_scores: np.ndarray, ids: list[str], k: int, label: str) -> None:
    """``hits`` is a correct top-``k`` of ``exact_scores`` (by position in ``ids``), up to float32 ties."""
    position = {doc_id: i for i, doc_id in enumerate(ids)}
    order = np.argsort(-exact_scores, kind="stable")
    expected_kth = exact_scores[order[k - 1]]
    assert len(hits) == k, label
    got = np.array([h.score for h in hits])
    truth = np.array([exact_scores[position[h.id]] for h in hits])
    # Every returned score is the document's exact dot product.
    np.testing.assert_allclose(got, truth, rtol=RTOL, err_msg=label)
    assert np.all(np.diff(got) <= 0), f"{label}: scores not in descending order"
    # The k-th score is the true k-th score, and nothing clearly better than it is missing.
    np.testing.assert_allclose(got[-1], expected_kth, rtol=RTOL, err_msg=label)
    returned = {h.id for h in hits}
    must_have = [ids[i] for i in order[:k] if exact_scores[i] > expected_kth * (1 + 2 * RTOL)]
    missing = [doc_id for doc_id in must_have if doc_id not in returned]
    assert not missing, f"{label}: missing {missing}"
    # Where a rank is well separated from its neighbours (the k+1-th included), the id is numpy's.
    ranked = exact_scores[order[: k + 1]]
    for rank in range(k):
        neighbours = [ranked[j] for j in (rank - 1, rank + 1) if 0 <= j < len(ranked)]
        if all(abs(n - ranked[rank]) > 4 * RTOL * abs(ranked[rank]) for n in neighbours):
            assert hits[rank].id == ids[order[rank]], f"{label}: rank {rank} is {hits[rank].id}"

@contextlib.contextmanager
def both_backends(docs, es_url, workdir, name: str, segment_docs: int = 50_000):
    """The embedded index and an Elasticsearch index holding ``docs``; the latter is deleted after."""
    import uuid

    from teran_es.config import ElasticsearchConfig
    from teran_es.index.elastic import ElasticIndex
    from teran_es.index.embedded import EmbeddedIndex

    embedded = EmbeddedIndex.open(workdir / "embedded", meta={"quantizer_fingerprint": "parity"}, segment_docs=segment_docs)
    elastic = ElasticIndex.open(
        ElasticsearchConfig(url=es_url, bulk_chunk_docs=500),
        f"teran-test-{name}-{uuid.uuid4().hex[:10]}",
        meta={"quantizer_fingerprint": "parity"},
        dead_letter_path=workdir / "dead-letter.jsonl",
    )
    try:
        for index in (embedded, elastic):
            report = index.add(docs)
            assert (report.indexed, report.failed) == (len(docs), 0)
            index.refresh()
            assert index.count() == len(docs)
        yield {"embedded": embedded, "elasticsearch": elastic}
    finally:
        embedded.close()
        elastic.delete_index()
        elastic.close()


@pytest.fixture(scope="module")
def backends(corpus, es_url, tmp_path_factory):
    """Both backends holding the same corpus."""
    with both_backends(corpus[0], es_url, tmp_path_factory.mktemp("parity"), "parity") as opened:
        yield opened


@pytest.mark.parametrize("backend", ["embedded", "elasticsearch"])
@pytest.mark.parametrize("k", [10, 100])
def test_search_equals_numpy(backends, corpus, backend, k):
    docs, queries, exact = corpus
    ids = [d.id for d in docs]
    index = backends[backend]
    for q, query in enumerate(queries):
        assert_same_top_k(index.search(query, k), exact[q], ids, k, f"{backend} search q{q} k={k}")


@pytest.mark.parametrize("backend", ["embedded", "elasticsearch"])
@pytest.mark.parametrize("k", [10, 100])
def test_search_many_equals_numpy(backends, corpus, backend, k):
    docs, queries, exact = corpus
    ids = [d.id for d in docs]
    results = backends[backend].search_many(queries, k)
    assert len(results) == len(queries)
    for q, hits in enumerate(results):
        assert_same_top_k(hits, exact[q], ids, k, f"{backend} search_many q{q} k={k}")


@pytest.mark.parametrize("formulation", ["bool", "sparse_vector"])
def test_both_elasticsearch_formulations_agree(backends, corpus, formulation):
    docs, queries, exact = corpus
    ids = [d.id for d in docs]
    elastic = backends["elasticsearch"]
    saved = elastic.formulation
    try:
        elastic.formulation = formulation
        for q, query in enumerate(queries[:20]):
            assert_same_top_k(elastic.search(query, 100), exact[q], ids, 100, f"{formulation} q{q}")
    finally:
        elastic.formulation = saved


def test_the_backends_agree_with_each_other(backends, corpus):
    _, queries, _ = corpus
    for query in queries:
        a = backends["embedded"].search(query, 100)
        b = backends["elasticsearch"].search(query, 100)
        overlap = len({h.id for h in a} & {h.id for h in b})
        assert overlap >= 99  # at most a float32 tie at the boundary
        common = {h.id: h.score for h in a}
        for hit in b:
            if hit.id in common:
                assert hit.score == pytest.approx(common[hit.id], rel=RTOL)


# --------------------------------------------------------------------------- the cell query shape

CELL_DOCS = 3000
CELL_VOCAB = 400  # cells per codebook
CODEBOOKS = 2


@pytest.fixture(scope="module")
def cell_corpus():
    """Seeded bags of cells (two codebooks) and MaxSumQuery queries as the cell encoder makes them:
    one group per word and codebook, weights on a few levels (so many cells share a weight)."""
    from teran_es.index.base import CELLS_FIELD
    from teran_es.surrogate import MaxSumQuery

    rng = np.random.default_rng(7)
    docs = []
    for i in range(CELL_DOCS):
        cells = [f"m{m}c{c}" for m in range(CODEBOOKS) for c in rng.choice(CELL_VOCAB, size=int(rng.integers(5, 16)), replace=False)]
        docs.append(SurrogateDocument(id=f"img-{i:05d}", terms=dict.fromkeys(cells, 1), field=CELLS_FIELD))
    queries = []
    for _ in range(30):
        groups = []
        for m in range(CODEBOOKS):
            for _word in range(int(rng.integers(1, 8))):
                cells = rng.choice(CELL_VOCAB, size=40, replace=False)
                levels = rng.integers(1, 17, size=cells.size) * float(rng.uniform(0.005, 0.02))
                groups.append({f"m{m}c{c}": float(w) for c, w in zip(cells, levels, strict=True)})
        queries.append(MaxSumQuery.of(groups))
    return docs, queries


def max_sum_reference(docs, query) -> list[tuple[float, str]]:
    """Per document: sum over groups of the largest float32 weight among the group's cells it holds
    (summed in float64, rounded to float32, as Lucene does); best first, ties by id."""
    scored = []
    for doc in docs:
        total = 0.0
        for group in query.groups:
            held = [float(np.float32(w)) for t, w in group if t in doc.terms]
            total += max(held, default=0.0)
        if total > 0:
            scored.append((float(np.float32(total)), doc.id))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return scored


@pytest.fixture(scope="module")
def cell_backends(cell_corpus, es_url, tmp_path_factory):
    """Both backends holding the bags of cells; the embedded one in several segments."""
    with both_backends(cell_corpus[0], es_url, tmp_path_factory.mktemp("cell-parity"), "cell-parity", 700) as opened:
        yield opened


@pytest.mark.parametrize("backend", ["embedded", "elasticsearch"])
@pytest.mark.parametrize("k", [10, 300])
def test_max_sum_queries_equal_the_numpy_reference_exactly(cell_backends, cell_corpus, backend, k):
    """The same top k, ties broken by id, with the same float32 scores: both backends do Lucene's
    arithmetic, so there is nothing to tolerate."""
    docs, queries = cell_corpus
    index = cell_backends[backend]
    for q, query in enumerate(queries):
        expected = max_sum_reference(docs, query)[:k]
        hits = index.search(query, k)
        assert [h.id for h in hits] == [doc_id for _, doc_id in expected], f"{backend} q{q}"
        assert [h.score for h in hits] == pytest.approx([s for s, _ in expected], rel=1e-7), f"{backend} q{q}"
    batched = index.search_many(queries, k)
    assert [[h.id for h in hits] for hits in batched] == [[d for _, d in max_sum_reference(docs, q)[:k]] for q in queries]
