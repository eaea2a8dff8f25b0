"""The generalisation protocols run with a model (generalisation_eval.py) on a tiny multi-source
collection: exact ranks against a brute force from the model's scores pair by pair, the
pipeline rows, the query sample and the work directory's guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from teran_es.evaluation import encode_image_set
from teran_es.features.images import load_image
from teran_es.generalisation import HELDOUT_SPLIT, bank_texts, build_protocols, concept_queries, recalls
from teran_es.generalisation_eval import (
    GeneralisationError,
    bank_norm_recalls,
    collection_image_set,
    evaluate_protocol,
    exact_ranks,
    fresh_workdir,
    query_sample,
)
from teran_es.model.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def encoded(tiny_emoji):
    model, config, _ = load_checkpoint(tiny_emoji["checkpoint"])
    image_set = collection_image_set(model, tiny_emoji["rows"], tiny_emoji["collection"])
    regions, mask = encode_image_set(model, image_set)
    return model, config, image_set, regions, mask


def pair_scores(model, paths: list[str], texts: list[str]) -> np.ndarray:
    """[images, texts]: each image and each text encoded alone, each pair scored alone."""
    size = model.config.image_size
    out = np.zeros((len(paths), len(texts)))
    with torch.no_grad():
        images = [model.encode_pixels(torch.from_numpy(load_image(p, size).transpose(2, 0, 1)[None].copy()))
                  for p in paths]
        sentences = [model.encode_sentences([t]) for t in texts]
        for i, image in enumerate(images):
            for j, sentence in enumerate(sentences):
                out[i, j] = float(model.score(image, sentence)[0, 0])
    return out


def brute_ranks(scores: np.ndarray, relevant: np.ndarray) -> list[int]:
    """scores, relevant [queries, items] -> per query the 0-based position of its first
    relevant item, ties broken by lower index."""
    ranks = []
    for row, hits in zip(scores, relevant, strict=True):
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))
        ranks.append(next(pos for pos, i in enumerate(order) if hits[i]))
    return ranks


def test_exact_ranks_agree_with_a_brute_force_from_the_models_scores(tiny_emoji, encoded):
    model, _, _, regions, mask = encoded
    rows = tiny_emoji["rows"]
    paths = [str(Path(tiny_emoji["collection"]) / r["path"]) for r in rows]
    concept_of_caption = {c: r["concept"] for r in rows for c in r["captions"]}
    protocols = build_protocols(rows)
    # what each protocol searches, taken from the rows themselves
    unseen = [i for i, r in enumerate(rows) if r["concept_split"] == "test"]
    held = [i for i, r in enumerate(rows) if r["split"] == HELDOUT_SPLIT]
    openmoji = [i for i, r in enumerate(rows) if r["source"] == "openmoji"]
    openmoji_test = [i for i in openmoji if rows[i]["split"] == "test"]
    expected_texts = {
        "unseen": sorted({c for i in unseen for c in rows[i]["captions"]}),
        "heldout": sorted({c for i in held for c in rows[i]["captions"]}),
        "openmoji": sorted(c for i in openmoji_test for c in rows[i]["captions"]),
    }
    galleries = {"unseen": list(range(len(rows))), "heldout": held, "openmoji": openmoji}
    image_queries = {"unseen": unseen, "heldout": held, "openmoji": openmoji_test}
    for name, protocol in protocols.items():
        assert sorted(protocol.texts) == expected_texts[name]

        def relevant(caption: str, row: dict, name=name) -> bool:
            if name == "openmoji":  # the hit is the caption's own drawing
                return caption in row["captions"]
            return row["concept"] == concept_of_caption[caption]  # any drawing of the caption's concept

        t2i, i2t = exact_ranks(model, regions, mask, protocol)
        gallery, queries, texts, pool = galleries[name], image_queries[name], protocol.texts, protocol.text_pool
        scores = pair_scores(model, [paths[i] for i in gallery], texts)  # [gallery, texts]
        hits = np.array([[relevant(text, rows[i]) for i in gallery] for text in texts])
        assert t2i.tolist() == brute_ranks(scores.T, hits), name
        scores = pair_scores(model, [paths[i] for i in queries], pool)  # [image queries, pool]
        hits = np.array([[relevant(text, rows[i]) for text in pool] for i in queries])
        assert i2t.tolist() == brute_ranks(scores, hits), name


def test_a_protocol_entry_with_pipeline_rows(tiny_emoji, encoded, tmp_path):
    model, config, image_set, regions, mask = encoded
    config.ingest.device = config.search.device = "cpu"
    protocol = build_protocols(tiny_emoji["rows"])["heldout"]
    exact_only = evaluate_protocol(model, config, image_set, regions, mask, protocol)
    assert set(exact_only) == {"gallery", "text_queries", "image_queries", "text_pool", "exact", "exact_t2i_by_kind"}
    by_kind = exact_only["exact_t2i_by_kind"]  # the text queries of each kind, all of them in all
    assert sum(v["queries"] for v in by_kind.values()) == exact_only["text_queries"]
    t2i, _ = exact_ranks(model, regions, mask, protocol)
    kinds = np.asarray(protocol.text_kinds)
    for kind, values in by_kind.items():
        assert values["r10"] == round(100 * float(np.mean(t2i[kinds == kind] < 10)), 2)
    entry = evaluate_protocol(model, config, image_set, regions, mask, protocol, candidates=[10, 20], queries=5,
                              workdir=tmp_path / "work")
    assert entry["exact"] == exact_only["exact"]
    assert (entry["gallery"], entry["text_queries"], entry["image_queries"]) == (9, 18, 9)
    pipeline = entry["pipeline"]
    assert pipeline["ingest"]["images"] == 9 and pipeline["queries"] == 5
    for n in (10, 20):
        values = pipeline[f"recall {n} + rerank"]
        assert all(0 <= values[k] <= 100 for k in ("r1", "r5", "r10")) and values["ms_p50"] > 0
        assert values["r1"] <= values["r5"] <= values["r10"]
    t2i, _ = exact_ranks(model, regions, mask, protocol)
    sample = query_sample(18, 5)
    assert entry["exact_on_sample"] == {f"r{k}": round(100 * float(np.mean(t2i[sample] < k)), 2) for k in (1, 5, 10)}
    # a second run finds the first's work directory and starts afresh
    again = evaluate_protocol(model, config, image_set, regions, mask, protocol, candidates=[10], queries=5,
                              workdir=tmp_path / "work")
    assert again["pipeline"]["ingest"]["images"] == 9


def test_query_sample_is_seeded_and_zero_means_all():
    assert query_sample(7, 0).tolist() == list(range(7)) and query_sample(7, 9).tolist() == list(range(7))
    sample = query_sample(100, 10)
    assert len(set(sample.tolist())) == 10 and sample.tolist() == sorted(sample.tolist())
    assert np.array_equal(sample, query_sample(100, 10)) and not np.array_equal(sample, query_sample(100, 10, seed=1))


def test_a_work_directory_with_other_files_is_refused_not_deleted(tmp_path):
    mine = tmp_path / "mine"
    (mine / "store").mkdir(parents=True)
    (mine / "quantizer.npz").write_bytes(b"")
    assert not fresh_workdir(mine).exists()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "holiday.jpg").write_bytes(b"")
    with pytest.raises(GeneralisationError, match="holiday.jpg"):
        fresh_workdir(theirs)
    assert (theirs / "holiday.jpg").exists()


def test_a_protocol_without_queries_is_refused(tiny_emoji, encoded):
    model, config, image_set, regions, mask = encoded
    rows = [dict(r, concept_split="train") for r in tiny_emoji["rows"]]  # no test concept left
    with pytest.raises(GeneralisationError, match="'unseen' has no queries"):
        evaluate_protocol(model, config, image_set, regions, mask, build_protocols(rows)["unseen"])


def test_a_model_without_an_image_front_end_is_refused(tiny_emoji):
    class NoFrontEnd:
        frontend = None

    with pytest.raises(GeneralisationError, match="image front end"):
        collection_image_set(NoFrontEnd(), tiny_emoji["rows"], tiny_emoji["collection"])


def test_bank_normalised_recalls_against_a_brute_force(tiny_emoji, encoded):
    model, _, _, regions, mask = encoded
    rows = tiny_emoji["rows"]
    paths = [str(Path(tiny_emoji["collection"]) / r["path"]) for r in rows]
    protocols = build_protocols(rows)
    beta = 5.0
    out = bank_norm_recalls(model, regions, mask, rows, protocols, [beta, 2.0], bank_size=0, check_queries=0)
    bank = bank_texts(rows)
    assert out["bank"]["texts"] == len(bank) == 10  # 5 trained concepts, 2 captions each
    # each image's normaliser from pair-by-pair scores: log of the mean of exp(beta * s) over the bank, / beta
    bank_pairs = pair_scores(model, paths, bank)  # [rows, bank]
    normaliser = np.log(np.exp(beta * bank_pairs).mean(1)) / beta
    concept_of_caption = {c: r["concept"] for r in rows for c in r["captions"]}
    for name in ("unseen", "heldout", "openmoji", "val", "seen"):
        if name in protocols:
            gallery, texts = protocols[name].gallery, protocols[name].texts
        else:
            gallery, texts = np.arange(len(rows)), concept_queries(rows, "val" if name == "val" else "train")[0]
        scores = pair_scores(model, [paths[i] for i in gallery], texts).T  # [texts, gallery]
        if name == "openmoji":
            hits = np.array([[t in rows[i]["captions"] for i in gallery] for t in texts])
        else:
            hits = np.array([[rows[i]["concept"] == concept_of_caption[t] for i in gallery] for t in texts])
        plain = recalls(np.asarray(brute_ranks(scores, hits)))
        normalised = recalls(np.asarray(brute_ranks(scores - normaliser[gallery][None, :], hits)))
        assert out["plain"][name]["t2i"] == plain, name
        assert out["beta=5"][name]["t2i"] == normalised, name
        assert out["beta=5"][name]["queries"] == len(texts)
    assert set(out["plain"]["unseen"]) == {"queries", "t2i", "t2i_by_kind"} and "t2i_by_kind" not in out["plain"]["seen"]
    assert set(out) == {"bank", "plain", "beta=5", "beta=2"}


@pytest.mark.parametrize("betas", [[], [0.0], [5.0, -1.0]])
def test_bank_normalisation_needs_positive_strengths(tiny_emoji, encoded, betas):
    model, _, _, regions, mask = encoded
    with pytest.raises(GeneralisationError, match="strengths > 0"):
        bank_norm_recalls(model, regions, mask, tiny_emoji["rows"], build_protocols(tiny_emoji["rows"]), betas)


def test_a_models_query_bank_shifts_text_to_image_ranks_only(tiny_emoji, tmp_path):
    from teran_es.bank_normalisers import encode_bank, image_normalisers
    from teran_es.generalisation_eval import row_normalisers
    from teran_es.model.bank import QueryBank

    model, config, _ = load_checkpoint(tiny_emoji["checkpoint"])
    image_set = collection_image_set(model, tiny_emoji["rows"], tiny_emoji["collection"])
    regions, mask = encode_image_set(model, image_set)
    assert row_normalisers(model, regions, mask) is None
    model.query_bank = QueryBank(tuple(bank_texts(tiny_emoji["rows"])), 5.0)
    normaliser = row_normalisers(model, regions, mask)
    words, word_mask = encode_bank(model, model.query_bank)
    np.testing.assert_array_equal(normaliser, image_normalisers(model, words, word_mask, regions, mask, 5.0))
    rows = tiny_emoji["rows"]
    paths = [str(Path(tiny_emoji["collection"]) / r["path"]) for r in rows]
    concept_of_caption = {c: r["concept"] for r in rows for c in r["captions"]}
    protocol = build_protocols(rows)["unseen"]
    scores = pair_scores(model, paths, protocol.texts).T - normaliser[None, :]  # the gallery is every row
    hits = np.array([[r["concept"] == concept_of_caption[t] for r in rows] for t in protocol.texts])
    t2i, i2t = exact_ranks(model, regions, mask, protocol, normaliser=normaliser)
    plain_t2i, plain_i2t = exact_ranks(model, regions, mask, protocol)
    assert t2i.tolist() == brute_ranks(scores, hits)
    assert t2i.tolist() != plain_t2i.tolist()  # the bank moves these ranks, so the check above tells
    assert i2t.tolist() == plain_i2t.tolist()
    entry = evaluate_protocol(model, config, image_set, regions, mask, protocol, normaliser=normaliser)
    assert entry["exact"]["t2i"] == recalls(t2i)
