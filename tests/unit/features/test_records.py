from __future__ import annotations

import numpy as np
import pytest

from teran_es.features.records import (
    ImageCaptionSet,
    ImageRecord,
    RecordError,
    guarded,
    pad_regions,
    validate_record,
)


def record(image_id="img", regions=3, dim=4, captions=("a", "b")):
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 0.5, (regions, 2))
    return ImageRecord(
        image_id=image_id,
        features=rng.standard_normal((regions, dim)).astype(np.float32),
        boxes=np.concatenate([corner, corner + 0.3], axis=1).astype(np.float32),
        captions=list(captions),
    )


def test_valid_record_passes_and_is_float32():
    r = record()
    r.features = r.features.astype(np.float64)
    out = validate_record(r, "f.parquet")
    assert out.features.dtype == np.float32 and out.boxes.dtype == np.float32


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: setattr(r, "features", r.features[0]), "2-d"),
        (lambda r: setattr(r, "boxes", r.boxes[:2]), "boxes have shape"),
        (lambda r: r.features.__setitem__((0, 0), np.nan), "NaN or Inf"),
        (lambda r: r.boxes.__setitem__((1, 2), np.inf), "NaN or Inf"),
        (lambda r: r.boxes.__setitem__((0, 2), 7.0), "not normalised"),
        (lambda r: r.boxes.__setitem__((0, 2), 0.0), "x2 < x1"),
        (lambda r: setattr(r, "features", r.features[:0]), "no regions"),
    ],
)
def test_bad_records_name_source_and_image(mutate, message):
    r = record(image_id="the-image")
    mutate(r)
    with pytest.raises(RecordError, match=message) as info:
        validate_record(r, "/data/x.parquet")
    assert "/data/x.parquet" in str(info.value) and "the-image" in str(info.value)


def test_limits_dim_regions_captions():
    with pytest.raises(RecordError, match="expected 8"):
        validate_record(record(), "s", feature_dim=8)
    with pytest.raises(RecordError, match="max_regions=2"):
        validate_record(record(), "s", max_regions=2)
    with pytest.raises(RecordError, match="captions_per_image=5"):
        validate_record(record(), "s", captions_per_image=5)
    assert validate_record(record(captions="abcdefg"), "s", captions_per_image=5).captions == list("abcde")


def test_small_box_overshoot_is_clipped():
    r = record()
    r.boxes[0, 2] = 1.005
    assert validate_record(r, "s").boxes.max() == 1.0


def test_guarded_skip_logs_and_continues(caplog):
    def bad():
        raise RecordError("file.npz", "7", "broken")

    loaders = [lambda: record("1"), bad, lambda: record("2")]
    assert [r.image_id for r in guarded(loaders, "skip")] == ["1", "2"]
    assert "file.npz" in caplog.text and "'7'" in caplog.text
    with pytest.raises(RecordError, match="broken"):
        list(guarded(loaders, "raise"))
    with pytest.raises(ValueError, match="on_error"):
        list(guarded(loaders, "ignore"))


def test_pad_regions_masks_padding():
    batch = pad_regions([record("a", regions=2), record("b", regions=4)])
    assert batch.features.shape == (2, 4, 4) and batch.boxes.shape == (2, 4, 4)
    assert batch.mask.tolist() == [[True, True, False, False], [True] * 4]
    assert not batch.features[0, 2:].any()
    assert batch.image_ids == ["a", "b"]


def test_image_caption_set_flattens_captions():
    images = ImageCaptionSet.from_records([record("a", captions=("x", "y")), record("b", captions=("z",))])
    texts, owners = images.caption_index()
    assert texts == ["x", "y", "z"] and owners.tolist() == [0, 0, 1]
    assert images.load(1).image_id == "b"
    assert len(images.subset(1)) == 1 and len(images.subset(0)) == 2
