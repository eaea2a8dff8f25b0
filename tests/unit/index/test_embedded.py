"""The embedded backend against a brute-force numpy dot product."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from teran_es.index.base import IndexError_, IndexMismatchError, InvalidDocumentError, SurrogateDocument
from teran_es.index.embedded import EmbeddedIndex


def random_docs(rng: np.random.Generator, n: int, vocab: int = 300, per_doc: int = 40, prefix: str = "img"):
    docs = []
    for i in range(n):
        terms = rng.choice(vocab, size=int(rng.integers(1, per_doc)), replace=False)
        tfs = rng.integers(1, 513, size=terms.size)
        docs.append(
            SurrogateDocument(
                id=f"{prefix}{i:05d}",
                terms={f"t{t}": int(f) for t, f in zip(terms, tfs, strict=True)},
                path=f"/images/{i}.jpg",
                caption=f"caption {i}",
            )
        )
    return docs


def random_query(rng: np.random.Generator, vocab: int = 300, n_terms: int = 30) -> dict[str, float]:
    terms = rng.choice(vocab, size=n_terms, replace=False)
    return {f"t{t}": float(w) for t, w in zip(terms, rng.uniform(0.01, 3.0, size=n_terms), strict=True)}


def clause(tf: int, weight: float) -> float:
    """One term's score as Lucene computes it: float32 boost times the stored value, in float32."""
    return float(np.float32(weight) * np.float32(tf))


def brute_force(docs, query, k):
    """sum_t tf x weight per document, clause by clause in float32, summed and rounded to float32."""
    scored = []
    for d in docs:
        shared = set(d.terms) & set(query)
        if shared:
            scored.append((float(np.float32(sum(clause(d.terms[t], query[t]) for t in shared))), d.id))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return scored[:k]


@pytest.mark.parametrize("segment_docs", [7, 50_000])
def test_search_equals_brute_force(tmp_path, segment_docs):
    rng = np.random.default_rng(0)
    docs = random_docs(rng, 200)
    with EmbeddedIndex.open(tmp_path / "idx", segment_docs=segment_docs) as index:
        report = index.add(docs)
        assert report.indexed == 200 and report.failed == 0
        assert index.count() == 200
        queries = [random_query(rng) for _ in range(20)]
        for q, hits in zip(queries, index.search_many(queries, 15), strict=True):
            expected = brute_force(docs, q, 15)
            assert [h.id for h in hits] == [e[1] for e in expected]
            np.testing.assert_allclose([h.score for h in hits], [e[0] for e in expected], rtol=1e-12)


def test_only_matching_documents_are_returned(tmp_path):
    with EmbeddedIndex.open(tmp_path / "idx") as index:
        index.add([SurrogateDocument("a", {"x": 1}), SurrogateDocument("b", {"y": 2})])
        hits = index.search({"x": 1.0, "zzz": 5.0}, 10)
        assert [h.id for h in hits] == ["a"]


def test_ties_are_broken_by_id(tmp_path):
    with EmbeddedIndex.open(tmp_path / "idx", segment_docs=2) as index:
        index.add([SurrogateDocument(i, {"x": 3}) for i in ["d", "b", "c", "a", "e"]])
        assert [h.id for h in index.search({"x": 1.0}, 3)] == ["a", "b", "c"]


def test_persisted_and_appendable(tmp_path):
    rng = np.random.default_rng(1)
    docs = random_docs(rng, 60)
    with EmbeddedIndex.open(tmp_path / "idx", meta={"model_fingerprint": "m1"}) as index:
        index.add(docs[:30])
    with EmbeddedIndex.open(tmp_path / "idx", meta={"model_fingerprint": "m1"}) as index:
        assert index.count() == 30
        index.add(docs[30:])
        assert index.meta()["model_fingerprint"] == "m1"
    with EmbeddedIndex.open(tmp_path / "idx", create=False) as index:
        assert index.count() == 60
        got = index.get("img00042")
        assert got is not None and dict(got.terms) == dict(docs[42].terms) and got.path == docs[42].path
        shown = index.get_many(["img00042", "nope", "img00001"])
        assert set(shown) == {"img00042", "img00001"}
        assert shown["img00001"].path == docs[1].path and dict(shown["img00001"].terms) == {}
        q = random_query(rng)
        assert [h.id for h in index.search(q, 10)] == [e[1] for e in brute_force(docs, q, 10)]


def test_readding_the_same_ids_is_idempotent(tmp_path):
    rng = np.random.default_rng(2)
    docs = random_docs(rng, 40)
    changed = SurrogateDocument("img00003", {"only": 7})
    with EmbeddedIndex.open(tmp_path / "idx", segment_docs=10) as index:
        index.add(docs)
        index.add(docs)
        index.add([changed])
        assert index.count() == 40
        assert dict(index.get("img00003").terms) == {"only": 7}
        assert [h.id for h in index.search({"only": 1.0}, 5)] == ["img00003"]
        index.merge()
        assert index.count() == 40
        assert len(list((tmp_path / "idx").glob("seg-*"))) == 1


def test_delete(tmp_path):
    rng = np.random.default_rng(3)
    docs = random_docs(rng, 30)
    with EmbeddedIndex.open(tmp_path / "idx") as index:
        index.add(docs)
        assert index.delete(["img00001", "img00002", "missing"]) == 2
        assert index.count() == 28 and index.get("img00001") is None
        assert index.existing_ids(["img00001", "img00003"]) == {"img00003"}
    with EmbeddedIndex.open(tmp_path / "idx") as index:
        assert index.count() == 28
        q = random_query(rng)
        assert "img00001" not in {h.id for h in index.search(q, 30)}


def test_bad_documents_go_to_the_dead_letter_file(tmp_path):
    good = SurrogateDocument("ok", {"a": 3})
    bad = [
        SurrogateDocument("dot", {"a.b": 3}),
        SurrogateDocument("big", {"a": 513}),
        SurrogateDocument("zero", {"a": 0}),
        SurrogateDocument("frac", {"a": 1.5}),
    ]
    with EmbeddedIndex.open(tmp_path / "idx") as index:
        report = index.add([bad[0], good, *bad[1:]])
        assert (report.indexed, report.failed) == (1, 4)
        lines = [json.loads(x) for x in (tmp_path / "idx" / "dead-letter.jsonl").read_text().splitlines()]
        assert [r["id"] for r in lines] == ["dot", "big", "zero", "frac"]
        assert "513" in lines[1]["error"]
        assert index.count() == 1


@pytest.mark.parametrize("query", [{}, {"a": -1.0}, {"a": float("nan")}, {"bad term": 1.0}])
def test_bad_queries_are_rejected(tmp_path, query):
    with EmbeddedIndex.open(tmp_path / "idx") as index:
        index.add([SurrogateDocument("x", {"a": 1})])
        with pytest.raises(InvalidDocumentError):
            index.search(query, 5)


def test_fingerprint_mismatch_is_refused(tmp_path):
    with EmbeddedIndex.open(tmp_path / "idx", meta={"quantizer_fingerprint": "q1"}):
        pass
    with pytest.raises(IndexMismatchError, match="q1"):
        EmbeddedIndex.open(tmp_path / "idx", meta={"quantizer_fingerprint": "q2"})


def test_second_writer_is_refused(tmp_path):
    with EmbeddedIndex.open(tmp_path / "idx"):
        with pytest.raises(IndexError_, match="another process"):
            EmbeddedIndex.open(tmp_path / "idx")


def test_interrupted_segment_write_is_ignored(tmp_path):
    with EmbeddedIndex.open(tmp_path / "idx") as index:
        index.add([SurrogateDocument("a", {"x": 1})])
    # A crash between writing a segment and committing the manifest leaves a temporary dir.
    stray = tmp_path / "idx" / ".tmp-seg-000099"
    stray.mkdir()
    (stray / "post_docs.npy").write_bytes(b"garbage")
    with EmbeddedIndex.open(tmp_path / "idx") as index:
        assert index.count() == 1
        assert not stray.exists()


def test_segment_renamed_but_not_committed_is_dropped_and_its_name_reused(tmp_path):
    # A process killed after renaming its new segment into place but before replacing the
    # manifest leaves seg-N unreferenced; the next flush writes seg-N again.
    with EmbeddedIndex.open(tmp_path / "idx") as index:
        index.add([SurrogateDocument("a", {"x": 1})])
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    orphan = tmp_path / "idx" / f"seg-{manifest['next_segment']:06d}"
    shutil.copytree(tmp_path / "idx" / manifest["segments"][0], orphan)
    with EmbeddedIndex.open(tmp_path / "idx") as index:
        assert not orphan.exists()
        index.add([SurrogateDocument("b", {"x": 2})])
        assert index.count() == 2
    with EmbeddedIndex.open(tmp_path / "idx", read_only=True) as index:
        assert {h.id for h in index.search({"x": 1.0}, 5)} == {"a", "b"}


def test_missing_index_without_create(tmp_path):
    with pytest.raises(IndexError_, match="no embedded index"):
        EmbeddedIndex.open(tmp_path / "nothing", create=False)


def test_read_only_view_while_a_writer_holds_the_index(tmp_path):
    with EmbeddedIndex.open(tmp_path / "idx") as writer:
        writer.add([SurrogateDocument("a", {"x": 2})])
        reader = EmbeddedIndex.open(tmp_path / "idx", read_only=True)
        assert [h.id for h in reader.search({"x": 1.0}, 5)] == ["a"]
        with pytest.raises(IndexError_, match="read-only"):
            reader.add([SurrogateDocument("b", {"x": 1})])
        reader.close()


def test_merge_keeps_exactly_the_live_documents(tmp_path):
    rng = np.random.default_rng(5)
    docs = random_docs(rng, 120)
    replaced = random_docs(rng, 10, prefix="img")  # new contents for img00000..img00009
    with EmbeddedIndex.open(tmp_path / "idx", segment_docs=13) as index:
        index.add(docs)
        index.add(replaced)
        index.delete([d.id for d in docs[50:60]])
        index.merge()
        live = {d.id: d for d in docs if d.id not in {x.id for x in docs[50:60]}}
        live.update({d.id: d for d in replaced})
        assert index.count() == len(live)
        assert len(list((tmp_path / "idx").glob("seg-*"))) == 1
        for _ in range(10):
            q = random_query(rng)
            expected = brute_force(list(live.values()), q, 20)
            hits = index.search(q, 20)
            assert [h.id for h in hits] == [e[1] for e in expected]
        assert dict(index.get("img00003").terms) == dict(replaced[3].terms)
