"""Search by image, the math: padding concatenated captions, the unpadded MrSw, the scan
against per-caption brute force, ranking, and the bank's file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teran_es.caption_search import (
    CaptionBank,
    CaptionBankError,
    max_region_sums,
    pad_segments,
    segment_ids,
    top_captions,
)
from teran_es.model.alignment import pairwise_scores


def random_bank(seed=0, n=37, dim=8, max_words=6) -> CaptionBank:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_words + 1, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    words = rng.normal(size=(int(offsets[-1]), dim)).astype(np.float16)
    return CaptionBank([f"img{i % 5}" for i in range(n)], [f"caption {i}" for i in range(n)], words, offsets, "fp")


def brute_scores(bank: CaptionBank, regions, mask, kind, padding) -> list[float]:
    """Each caption scored alone, as the model scores one (image, sentence) pair."""
    out = []
    for i in range(len(bank)):
        words = torch.from_numpy(bank.words[bank.offsets[i] : bank.offsets[i + 1]].astype(np.float32))[None]
        out.append(float(pairwise_scores(regions, mask, words, torch.ones(words.shape[:2], dtype=torch.bool),
                                         kind, padding)[0, 0]))
    return out


def test_pad_segments_matches_slicing():
    bank = random_bank()
    words, mask = pad_segments(bank.words, bank.offsets, 3, 11)
    assert words.shape[0] == 8 and mask.shape == words.shape[:2]
    for row, i in enumerate(range(3, 11)):
        length = int(bank.offsets[i + 1] - bank.offsets[i])
        assert mask[row].sum() == length and not mask[row, length:].any()
        np.testing.assert_array_equal(words[row, :length].numpy(), bank.words[bank.offsets[i] : bank.offsets[i + 1]].astype(np.float32))
        assert not words[row, length:].any()


def test_max_region_sums_is_mrsw_per_caption():
    bank = random_bank(seed=1)
    regions = torch.randn(5, 8)
    got = max_region_sums(bank.words, bank.offsets, regions, chunk=7)
    for i in range(len(bank)):
        words = torch.from_numpy(bank.words[bank.offsets[i] : bank.offsets[i + 1]].astype(np.float32))
        assert float(got[i]) == pytest.approx(float((words @ regions.T).max(dim=1).values.sum()), abs=1e-5)
    assert torch.equal(max_region_sums(bank.words, bank.offsets, regions, segments=segment_ids(bank.offsets)), got)


def test_an_empty_segment_scores_zero():
    flat = np.ones((3, 2), dtype=np.float32)
    offsets = np.array([0, 2, 2, 3])
    assert max_region_sums(flat, offsets, torch.ones(1, 2)).tolist() == [4.0, 0.0, 2.0]


@pytest.mark.parametrize("kind, padding", [("MrSw", "masked"), ("MrSw", "reference"), ("symm", "masked"),
                                           ("MwSr", "masked")])
def test_the_scan_scores_every_caption_as_the_model_does(kind, padding):
    bank = random_bank(seed=2)
    regions = torch.nn.functional.normalize(torch.randn(1, 6, 8), dim=-1)
    mask = torch.tensor([[True, True, True, True, False, False]])
    hits, seconds = bank.scan(regions, mask, k=len(bank), kind=kind, padding=padding, batch_size=10)
    expected = brute_scores(bank, regions[:, :4], mask[:, :4], kind, padding)
    if padding == "reference":  # reference padding counts padded regions as zeros
        expected = brute_scores(bank, regions * mask[..., None], torch.ones_like(mask), kind, padding)
    by_caption = {h.caption: h.score for h in hits}
    assert len(hits) == len(bank) and seconds >= 0
    for i, score in enumerate(expected):
        assert by_caption[f"caption {i}"] == pytest.approx(score, abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_top_captions_breaks_ties_by_position():
    assert top_captions(torch.tensor([0.5, 0.9, 0.5, 0.9, 0.1]), 3) == [1, 3, 0]
    assert top_captions(torch.tensor([0.2]), 5) == [0]


class FakeTextModel:
    """Words = one-hot of each character (a..h), so the bank can be checked by hand."""

    class config:  # noqa: N801
        embed_dim = 8

    def encode_sentences(self, texts):
        width = max(len(t) for t in texts)
        words = torch.zeros(len(texts), width, 8)
        mask = torch.zeros(len(texts), width, dtype=torch.bool)
        for row, text in enumerate(texts):
            for col, ch in enumerate(text):
                words[row, col, ord(ch) - ord("a")] = 1.0
                mask[row, col] = True
        return type("Out", (), {"words": words, "mask": mask})()


def test_build_save_load_and_a_bank_of_another_model(tmp_path):
    pairs = [("x", "abc"), ("x", "h"), ("y", "gg")]
    import contextlib

    calls, guarded = [], []

    @contextlib.contextmanager
    def guard():
        guarded.append("in")
        yield

    bank = CaptionBank.build(FakeTextModel(), pairs, "model-1", batch_size=2, progress=calls.append, guard=guard)
    assert calls == [2, 1] and guarded == ["in", "in"] and bank.offsets.tolist() == [0, 3, 4, 6]
    assert bank.words.dtype == np.float16 and bank.words[3].argmax() == 7
    path = tmp_path / "captions.npz"
    bank.save(path)
    loaded = CaptionBank.load(path, "model-1")
    assert loaded.captions == ["abc", "h", "gg"] and loaded.image_ids == ["x", "x", "y"]
    np.testing.assert_array_equal(loaded.words, bank.words)
    with pytest.raises(CaptionBankError, match="delete it"):
        CaptionBank.load(path, "model-2")
    hits, _ = loaded.scan(torch.eye(8)[None, 6:7], torch.ones(1, 1, dtype=torch.bool), k=1)
    assert hits[0].caption == "gg" and hits[0].score == pytest.approx(2.0)


def test_no_captions_is_a_clear_error():
    with pytest.raises(CaptionBankError, match="no captions"):
        CaptionBank.build(FakeTextModel(), [], "m")
