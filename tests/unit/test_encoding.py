"""encoding.py: which kind of image a batch holds, and the model inputs made of each kind."""

from __future__ import annotations

import numpy as np
import pytest

from teran_es.encoding import image_inputs, record_kind, uses_pixels
from teran_es.features.pixels import ImageFile
from teran_es.features.records import ImageRecord, TrunkMapRecord


def _region(i: int) -> ImageRecord:
    return ImageRecord(f"r{i}", np.full((3, 4), i, dtype=np.float32), np.tile([0, 0, 1, 1], (3, 1)).astype(np.float32))


def _trunk(i: int) -> TrunkMapRecord:
    return TrunkMapRecord(f"t{i}", np.full((5, 2, 2), i, dtype=np.float16))


def _pixels(i: int) -> ImageFile:
    return ImageFile(f"p{i}", "unused.png", pixels=np.full((8, 8, 3), i, dtype=np.uint8))


def test_each_kind_is_named_and_a_mixed_batch_is_refused():
    assert record_kind([_region(0), _region(1)]) == "regions"
    assert record_kind([_trunk(0)]) == "trunk"
    assert record_kind([_pixels(0)]) == "pixels" and uses_pixels([_pixels(0)])
    assert not uses_pixels([_trunk(0)])
    with pytest.raises(ValueError, match="pixels and trunk"):
        record_kind([_pixels(0), _trunk(1)])
    with pytest.raises(ValueError, match="regions and trunk"):
        record_kind([_region(0), _trunk(1)])


def test_the_inputs_of_each_kind():
    trunk = image_inputs([_trunk(1), _trunk(2)])
    assert set(trunk) == {"trunk_maps"} and trunk["trunk_maps"].shape == (2, 5, 2, 2)
    assert trunk["trunk_maps"][1].float().mean().item() == 2.0  # in record order, values kept
    pixels = image_inputs([_pixels(3)], image_size=8)
    assert pixels["pixels"].shape == (1, 3, 8, 8) and pixels["pixels"].max().item() == 3
    regions = image_inputs([_region(0), _region(1)])
    assert set(regions) == {"features", "boxes", "region_mask"} and regions["features"].shape == (2, 3, 4)
