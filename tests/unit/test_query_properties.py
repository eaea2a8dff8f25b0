"""Query building on arbitrary input (hypothesis), and the awkward queries people type: empty,
blank, 10,000 words, non-Latin scripts, control characters.

Properties:

* any finite word vectors -> either first stage's query (cells: sum over groups of max; scalar:
  weighted terms) -> either no terms, or a query both backends accept (valid terms, positive
  finite weights) whose Elasticsearch bodies carry exactly its weights and which the embedded
  index scores exactly as a brute-force reference does;
* any string -> ``Searcher.encode_query`` gives between 1 and ``model.max_words`` finite word
  vectors or a ``QueryError``; ``Searcher.search`` raises nothing else.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from teran_es.config import load_config
from teran_es.features.synthetic import synthetic_vocabulary, tiny_model_overrides
from teran_es.index import es_queries
from teran_es.index.terms import is_valid_term, validate_query
from teran_es.searcher import QueryError, Searcher
from teran_es.surrogate import MaxSumQuery

FLOAT32_MAX = float(np.finfo(np.float32).max)
ELEMENTS = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, FLOAT32_MAX, -FLOAT32_MAX, 1e-45, 1.0]),
)
PROPERTY_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORDS = synthetic_vocabulary()


@pytest.fixture(scope="module", params=["cells", "scalar"])
def searcher(request, synthetic_dataset, tmp_path_factory, ingest_tiny, tiny_quantizer):
    """A Searcher over 40 synthetic images ingested into the embedded index by a tiny random
    TERAN, with each first stage."""
    config = load_config(
        None,
        [
            *tiny_model_overrides(synthetic_dataset.text_backbone),
            f"workdir={tmp_path_factory.mktemp('queries')}",
            *tiny_quantizer,
            f"quantizer.kind={request.param}",
        ],
    )
    model, _, _ = ingest_tiny(config)
    opened = Searcher.open(config, model=model)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def indexed_documents(searcher) -> dict[str, dict[str, int]]:
    return {i: dict(searcher.index.get(i).terms) for i in searcher.store.ids() if searcher.index.get(i)}


def exact_score(document: dict[str, int], query: dict[str, float] | MaxSumQuery) -> float:
    """The score both backends must give, by brute force: each clause as Lucene scores it (float32
    boost x stored value, in float32), clauses summed, the sum rounded to float32."""

    def clause(tf: int, weight: float) -> float:
        return float(np.float32(weight) * np.float32(tf))

    if isinstance(query, MaxSumQuery):  # constant score: the weight of the best term held
        total = sum(max([clause(1, w) if t in document else 0.0 for t, w in group]) for group in query.groups)
    else:
        total = sum(clause(tf, query[t]) for t, tf in document.items() if t in query)
    return float(np.float32(total))


def sent_weights(body: dict, formulation: str) -> dict | list:
    """The weights an Elasticsearch request body carries: {term: boost}, or one dict per group."""
    inner = body["query"]
    if "dis_max" in json.dumps(inner):
        groups = []
        for clause in inner["bool"]["should"]:
            group = {}
            for c in clause["dis_max"]["queries"]:
                found = c["constant_score"]["filter"]
                terms = [found["term"]["cells"]] if "term" in found else found["terms"]["cells"]
                group.update(dict.fromkeys(terms, c["constant_score"]["boost"]))
            groups.append(group)
        return groups
    if formulation == "bool":
        return {c["term"]["terms"]["value"]: c["term"]["terms"]["boost"] for c in inner["bool"]["should"]}
    assert inner["sparse_vector"]["prune"] is False
    return inner["sparse_vector"]["query_vector"]


@PROPERTY_SETTINGS
@given(data=st.data())
def test_any_word_vectors_give_a_query_both_backends_accept_and_score_exactly(
    searcher, indexed_documents, data
):
    dim = searcher.quantizer.dim
    words = data.draw(hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.just(dim)), elements=ELEMENTS))
    mask = data.draw(hnp.arrays(np.bool_, words.shape[:1]))
    query = searcher.quantizer.query(words, mask)
    if not query:
        return  # nothing to search for: Searcher.search turns this into a QueryError
    validate_query(query)
    if isinstance(query, MaxSumQuery):
        groups = [dict(g) for g in query.groups]
        assert len(groups) <= words.shape[0] * searcher.quantizer.config.codebooks
        assert all(len(g) < searcher.quantizer.config.nprobe for g in groups)  # the floor cell is left out
    else:
        groups = query
        assert len(query) <= searcher.quantizer.query_gamma
    pairs = [p for g in groups for p in g.items()] if isinstance(groups, list) else list(groups.items())
    assert all(is_valid_term(t) and isinstance(w, float) and math.isfinite(w) and w > 0 for t, w in pairs)

    for formulation in es_queries.FORMULATIONS:
        body = json.loads(json.dumps(es_queries.search_body(query, 10, formulation)))  # plain JSON
        assert sent_weights(body, formulation) == groups

    hits = searcher.index.search(query, k=len(indexed_documents))
    expected = {i: exact_score(d, query) for i, d in indexed_documents.items()}
    assert {h.id for h in hits} == {i for i, s in expected.items() if s > 0}
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.id], rel=1e-9)
    assert [(-h.score, h.id) for h in hits] == sorted((-h.score, h.id) for h in hits)


TEXTS = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from([*WORDS, "zebra", "猫", "🚗", "\u200b", "\x00", "  "]), max_size=60).map(" ".join),
)


@PROPERTY_SETTINGS
@given(text=TEXTS)
def test_any_string_encodes_to_at_most_max_words_or_a_query_error(searcher, text):
    max_words = searcher.model.config.max_words
    try:
        words, mask = searcher.encode_query(text)
    except QueryError:
        encoded = None
    else:
        encoded = words
        assert words.shape[0] == 1 and words.shape[1] <= max_words and words.shape[2] == searcher.quantizer.dim
        assert bool(mask.any()) and torch.isfinite(words).all()
        query = searcher.first_stage_query(words, mask)
        if query:
            validate_query(query)
    try:
        result = searcher.search(text, k=5, candidates=10)
    except QueryError as exc:
        assert str(exc)
        return
    assert encoded is not None
    assert len(result.hits) <= 5
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)


# --------------------------------------------------------------------------- awkward queries


@pytest.mark.parametrize("text", ["", "   ", "\t\n", "\u3000"])
def test_empty_and_blank_queries_say_so(searcher, text):
    with pytest.raises(QueryError, match="empty"):
        searcher.search(text)


def test_a_10000_word_query_is_truncated_to_max_words(searcher):
    rng = np.random.default_rng(3)
    words = [str(w) for w in rng.choice([w for w in WORDS if w.isalpha()], size=10_000)]
    max_words = searcher.model.config.max_words
    encoded, mask = searcher.encode_query(" ".join(words))
    assert encoded.shape[1] == max_words
    # Every word of the tiny vocabulary is one token: the model sees the first max_words - 2
    # of them ([CLS] and [SEP] take the other two), so the search is that of the short query.
    long = searcher.search(" ".join(words), k=10, candidates=40)
    short = searcher.search(" ".join(words[: max_words - 2]), k=10, candidates=40)
    assert [(h.id, h.score) for h in long.hits] == [(h.id, h.score) for h in short.hits]


@pytest.mark.parametrize("text", ["日本語のクエリ", "Ελληνικά", "العربية", "🐱 🚗", "\x00\x07", "\u200b\u200b"])
def test_queries_in_scripts_the_text_model_does_not_know_say_so(searcher, text):
    """The tiny test vocabulary has only English words: nothing here is known to it. (A real
    WordPiece vocabulary knows many of these scripts; then they are searched like any text.)"""
    with pytest.raises(QueryError, match="known to the text model|empty"):
        searcher.search(text)


def test_unknown_words_among_known_ones_are_searched(searcher):
    result = searcher.search("a red 猫 cat", k=5, candidates=40)
    assert len(result.hits) == 5
