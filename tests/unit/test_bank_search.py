"""Ingest and search with a model that carries a query bank, on the embedded backend: ingest
keeps every stored image's normaliser in the work directory, search subtracts it in the
exact rerank (scan and recall + rerank alike), and a missing, stale or damaged file costs
time, never results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teran_es.bank_normalisers import encode_bank, image_normalisers
from teran_es.features.columnar import ColumnarReader
from teran_es.indexer import Ingestor
from teran_es.model.alignment import chunked_scores
from teran_es.model.bank import QueryBank
from teran_es.model.checkpoint import model_fingerprint
from teran_es.model.teran import build_model
from teran_es.normaliser_file import read_normalisers, write_normalisers
from teran_es.searcher import Searcher
from teran_es.workdir import Artifacts

QUERIES = ["a red cat", "a green car and a blue bird", "there is a white horse", "boat"]
BANK = ("a blue boat", "a white cat", "a red car", "there is a horse", "a bird and a dog", "green grass")


@pytest.fixture
def setup(synthetic_dataset, tiny_pipeline, tmp_path):
    """(config factory, model with a bank, records): the cell first stage probing every cell,
    so that recall + rerank over all images is the exact scan."""

    def config(*extra):
        return tiny_pipeline(f"workdir={tmp_path / 'work'}", "quantizer.kind=cells", "quantizer.cells=64",
                             "quantizer.nprobe=64", "quantizer.probe_beam=0", "quantizer.query_levels=0",
                             "quantizer.sample_size=2000", "ingest.device=cpu", "search.device=cpu",
                             "search.batch_size=16", *extra)

    torch.manual_seed(0)
    model = build_model(config().model).eval()
    model.query_bank = QueryBank(BANK, 5.0)
    records = list(ColumnarReader(synthetic_dataset.data_path).iter_records())
    return config, model, records


def ingest(config, model, records):
    with Ingestor(config, model=model) as ingestor:
        return ingestor.ingest(records, batch_size=32), ingestor.store.get_many([r.image_id for r in records])


def by_definition(model, stored, records, text):
    """Every image's score for ``text`` less its normaliser, from the stored regions, ranked."""
    regions, mask = stored
    words, word_mask = encode_bank(model, model.query_bank)
    normalisers = image_normalisers(model, words, word_mask, regions, mask, model.query_bank.beta)
    tokens = model.tokenize([text])
    with torch.inference_mode():
        query = model.encode_texts(tokens["input_ids"], tokens["attention_mask"])
    scores = chunked_scores(regions, mask, query.words.float(), query.mask)[:, 0].numpy() - normalisers
    ids = [r.image_id for r in records]
    return sorted(zip(ids, scores.tolist(), strict=True), key=lambda item: (-item[1], item[0])), normalisers


def test_ingest_stores_every_images_normaliser(setup):
    config, model, records = setup
    report, stored = ingest(config(), model, records)
    assert report.normalised == len(records)
    saved = read_normalisers(Artifacts(config()).normalisers)
    assert saved.matches(model_fingerprint(model), model.query_bank.fingerprint)
    _, normalisers = by_definition(model, stored, records, "boat")
    np.testing.assert_allclose([saved.values[r.image_id] for r in records], normalisers, rtol=0, atol=1e-6)
    again, _ = ingest(config(), model, records)
    assert again.normalised == 0 and again.skipped_existing == len(records)


def test_search_ranks_by_the_normalised_score_in_both_modes(setup):
    config, model, records = setup
    _, stored = ingest(config(), model, records)
    searcher = Searcher.open(config(), model=model)
    plain = Searcher.open(config("search.bank_norm=false"), model=model)
    try:
        reordered = 0
        for text in QUERIES:
            expected, _ = by_definition(model, stored, records, text)
            exact = searcher.search(text, k=10, exact=True)
            piped = searcher.search(text, k=10, candidates=len(records))
            assert exact.bank_normalised and piped.bank_normalised
            assert [h.id for h in exact.hits] == [i for i, _ in expected[:10]]
            np.testing.assert_allclose([h.score for h in exact.hits], [s for _, s in expected[:10]], atol=1e-5)
            assert [(h.id, h.score) for h in piped.hits] == [(h.id, h.score) for h in exact.hits]
            unnormalised = plain.search(text, k=10, exact=True)
            assert not unnormalised.bank_normalised
            reordered += [h.id for h in unnormalised.hits] != [h.id for h in exact.hits]
        assert reordered  # the normalisers change rankings here, so the test can tell them apart
    finally:
        searcher.close()
        plain.close()


def test_the_alignment_view_gives_the_hits_score_and_its_normaliser(setup):
    from teran_es.alignment_view import word_region_alignment

    config, model, records = setup
    ingest(config(), model, records)
    saved = read_normalisers(Artifacts(config()).normalisers)
    searcher = Searcher.open(config(), model=model)
    plain = Searcher.open(config("search.bank_norm=false"), model=model)
    try:
        for text in QUERIES[:2]:
            for hit in searcher.search(text, k=3, exact=True).hits:
                view = word_region_alignment(searcher, text, hit.id)
                assert view.normaliser == pytest.approx(saved.values[hit.id], abs=1e-6)
                assert view.score == pytest.approx(hit.score, abs=1e-4)
                assert view.score == pytest.approx(view.alignment - view.normaliser, abs=1e-6)
                unnormalised = word_region_alignment(plain, text, hit.id)
                assert unnormalised.normaliser is None
                assert unnormalised.score == unnormalised.alignment == pytest.approx(view.alignment, abs=1e-6)
                # MrSw with masked padding: the words' best values summed
                assert view.alignment == pytest.approx(sum(w.score for w in view.words), abs=1e-4)
    finally:
        searcher.close()
        plain.close()


@pytest.mark.parametrize("damage", ["missing", "stale", "garbage", "partial"])
def test_a_bad_normaliser_file_costs_time_not_results(setup, damage):
    config, model, records = setup
    ingest(config(), model, records)
    path = Artifacts(config()).normalisers
    searcher = Searcher.open(config(), model=model)
    expected = [searcher.search(t, k=10, exact=True).hits for t in QUERIES]
    searcher.close()
    saved = read_normalisers(path)
    if damage == "missing":
        path.unlink()
    elif damage == "stale":  # made for another bank: every value off by a constant would still rank alike
        write_normalisers(path, saved.model_fingerprint, "another bank",
                          {i: float(n) for n, i in enumerate(sorted(saved.values))})
    elif damage == "garbage":
        path.write_bytes(b"not parquet")
    else:  # an ingest that stopped before writing the last images' normalisers
        write_normalisers(path, saved.model_fingerprint, saved.bank_fingerprint, dict(list(saved.values.items())[:30]))
    searcher = Searcher.open(config(), model=model)
    try:
        got = [searcher.search(t, k=10, exact=True) for t in QUERIES]
        assert "normalise" in got[0].timings  # the missing ones were computed for the first query
        for hits, result in zip(expected, got, strict=True):
            assert [h.id for h in result.hits] == [h.id for h in hits]
            np.testing.assert_allclose([h.score for h in result.hits], [h.score for h in hits], atol=1e-5)
    finally:
        searcher.close()
    report, _ = ingest(config(), model, records)  # ingest repairs the file
    assert report.normalised == (len(records) - 30 if damage == "partial" else len(records))
    assert read_normalisers(path).values == pytest.approx(saved.values, abs=1e-9)


def test_a_model_without_a_bank_writes_no_file_and_searches_plainly(setup):
    config, model, records = setup
    model.query_bank = None
    report, _ = ingest(config(), model, records)
    assert report.normalised == 0 and not Artifacts(config()).normalisers.exists()
    searcher = Searcher.open(config(), model=model)
    try:
        assert not searcher.search("boat", k=5, exact=True).bank_normalised
    finally:
        searcher.close()
