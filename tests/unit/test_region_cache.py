"""What a pretrained front end computes of an image that never changes, computed once per image
and cached: the regions of a frozen one, the trunk maps of one with fine-tuned blocks."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from teran_es.features.pixels import ImageFile, image_file_set
from teran_es.features.records import RecordError, TrunkMapRecord
from teran_es.model.efficientnet import EfficientNetLite
from teran_es.model.pretrained_frontend import PretrainedRegions
from teran_es.region_cache import (
    cached_region_set,
    cached_trunk_set,
    frozen_pretrained_frontend,
    model_image_set,
    tuned_pretrained_frontend,
)

STAGES = ((1, 3, 1, 1, 8, 4), (2, 3, 2, 2, 4, 6))


class Holder(torch.nn.Module):
    """Stands in for a TERAN: all the cache needs is ``.frontend``."""

    def __init__(self, frontend):
        super().__init__()
        self.frontend = frontend


@pytest.fixture
def pictures(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for i in range(5):
        path = tmp_path / f"p{i}.png"
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)
        files.append(ImageFile(f"p{i}", str(path), [f"picture {i}"], "train"))
    return files


def make_holder(trainable_blocks=0):
    torch.manual_seed(0)
    return Holder(PretrainedRegions(EfficientNetLite(STAGES, 8, 3).eval(), block=2, grid=2,
                                    trainable_blocks=trainable_blocks))


def test_cached_regions_equal_the_front_end_and_are_computed_once(tmp_path, pictures, monkeypatch):
    holder = make_holder()
    images = image_file_set(pictures, 16)
    cached = cached_region_set(holder, images, 16, cache_dir=tmp_path / "cache", batch_size=2, progress=False)
    assert cached.image_ids == images.image_ids and cached.captions == images.captions
    pixels = torch.from_numpy(np.stack([images.load(i).pixels for i in range(5)]).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        features, boxes = holder.frontend(pixels)
    for i in range(5):
        record = cached.load(i)
        np.testing.assert_allclose(record.features, features[i].numpy(), atol=2e-3, rtol=2e-3)  # fp16 on disk
        np.testing.assert_array_equal(record.boxes, boxes[i].numpy())
    counted = []
    original = PretrainedRegions.forward

    def counting(self, x):
        counted.append(len(x))
        return original(self, x)

    monkeypatch.setattr(PretrainedRegions, "forward", counting)
    os.utime(pictures[1].path, ns=(1, 1))  # an edited file is computed again, the others are not
    again = cached_region_set(holder, images, 16, cache_dir=tmp_path / "cache", progress=False)
    assert counted == [1]
    np.testing.assert_array_equal(again.load(3).features, cached.load(3).features)


def test_only_a_frozen_pretrained_front_end_is_cached(tmp_path, pictures):
    assert frozen_pretrained_frontend(make_holder()) is not None
    tuned = make_holder(trainable_blocks=1)
    assert frozen_pretrained_frontend(tuned) is None
    assert frozen_pretrained_frontend(Holder(None)) is None
    with pytest.raises(ValueError, match="frozen pretrained"):
        cached_region_set(tuned, image_file_set(pictures, 16), 16, cache_dir=tmp_path, progress=False)


def test_another_front_end_gets_its_own_cache(tmp_path, pictures):
    images = image_file_set(pictures, 16)
    first = cached_region_set(make_holder(), images, 16, cache_dir=tmp_path, progress=False)
    other = make_holder()
    with torch.no_grad():
        other.frontend.network._blocks[0]._project_conv.weight.mul_(2.0)
    second = cached_region_set(other, images, 16, cache_dir=tmp_path, progress=False)
    assert not np.allclose(first.load(0).features, second.load(0).features)
    assert len(list((tmp_path / "region-features").iterdir())) == 2


def test_a_model_takes_cached_regions_when_frozen_trunk_maps_when_tuned_and_pixels_otherwise(tmp_path, pictures, monkeypatch):
    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path / "cache"))
    frozen, tuned = make_holder(), make_holder(trainable_blocks=1)
    for holder in (frozen, tuned):
        holder.config = type("Config", (), {"image_size": 16})()
    no_captions = ImageFile("bare", pictures[0].path, [], "train")
    as_regions = model_image_set(frozen, [*pictures, no_captions], name="p")
    expected = cached_region_set(frozen, image_file_set(pictures, 16), 16, progress=False)
    assert as_regions.image_ids == expected.image_ids == [f"p{i}" for i in range(5)]  # the file without captions left out
    np.testing.assert_array_equal(as_regions.load(3).features, expected.load(3).features)
    as_trunk = model_image_set(tuned, pictures, name="p")  # a tuned block: its frozen trunk's maps
    assert isinstance(as_trunk.load(3), TrunkMapRecord) and as_trunk.load(3).maps.shape == (6, 4, 4)
    plain = make_holder()
    plain.frontend = None  # no pretrained front end: the pixels
    plain.config = frozen.config
    as_pixels = model_image_set(plain, pictures, name="p")
    assert isinstance(as_pixels.load(3), ImageFile) and as_pixels.load(3).pixels.shape == (16, 16, 3)


def test_cached_trunk_maps_equal_the_trunk_and_survive_tuning(tmp_path, pictures, monkeypatch):
    """A tuned front end's trunk maps are cached once; the tail on them gives the front end's
    regions; changing the tuned blocks (a training step) keeps the cache, changing a frozen
    block or where the trunk stops does not."""
    holder = make_holder(trainable_blocks=1)
    assert tuned_pretrained_frontend(holder) is holder.frontend and frozen_pretrained_frontend(holder) is None
    images = image_file_set(pictures, 16)
    cached = cached_trunk_set(holder, images, 16, cache_dir=tmp_path, batch_size=2, progress=False)
    pixels = torch.from_numpy(np.stack([images.load(i).pixels for i in range(5)]).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        trunk = holder.frontend.trunk(pixels)
        maps = torch.from_numpy(np.stack([cached.load(i).maps for i in range(5)]))
        np.testing.assert_allclose(maps.float().numpy(), trunk.numpy(), atol=2e-3, rtol=2e-3)  # fp16 on disk
        np.testing.assert_allclose(holder.frontend.tail(maps)[0].numpy(), holder.frontend(pixels)[0].numpy(),
                                   atol=5e-3, rtol=5e-3)
    assert cached.load(0).maps.dtype == np.float16 and cached.image_ids == images.image_ids
    with torch.no_grad():
        holder.frontend.network._blocks[2]._project_conv.weight.mul_(3.0)  # the tuned block moves
    counted = []
    original = PretrainedRegions.trunk
    monkeypatch.setattr(PretrainedRegions, "trunk", lambda self, x: counted.append(len(x)) or original(self, x))
    cached_trunk_set(holder, images, 16, cache_dir=tmp_path, progress=False)
    assert counted == []  # nothing computed again
    deeper = make_holder(trainable_blocks=2)  # the trunk stops a block earlier: its own cache
    cached_trunk_set(deeper, images, 16, cache_dir=tmp_path, progress=False)
    assert counted == [5] and len(list((tmp_path / "region-features").iterdir())) == 2
    with pytest.raises(ValueError, match="fine-tuned blocks"):
        cached_trunk_set(make_holder(), images, 16, cache_dir=tmp_path, progress=False)


def test_files_held_without_pixels_cache_the_same_and_bad_ones_are_still_found(tmp_path, pictures, monkeypatch):
    """``keep_pixels=False`` holds files, not pixels; the cache reads them and computes what it
    computes of decoded images; an image that does not decode is refused (or skipped) as before."""
    undecoded = image_file_set(pictures, 16, keep_pixels=False)
    assert all(undecoded.load(i).pixels is None for i in range(5))
    holder = make_holder()
    from_files = cached_region_set(holder, undecoded, 16, cache_dir=tmp_path / "a", progress=False)
    from_pixels = cached_region_set(holder, image_file_set(pictures, 16), 16, cache_dir=tmp_path / "b", progress=False)
    for i in range(5):
        np.testing.assert_array_equal(from_files.load(i).features, from_pixels.load(i).features)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    bad = [*pictures, ImageFile("broken", str(broken), ["a broken picture"], "train")]
    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path / "cache"))
    holder.config = type("Config", (), {"image_size": 16})()
    with pytest.raises(RecordError, match="broken"):
        model_image_set(holder, bad, name="p")
    skipped = image_file_set(bad, 16, keep_pixels=False, on_error="skip")
    assert skipped.image_ids == [f"p{i}" for i in range(5)]


def test_model_image_set_holds_no_pixels_for_a_pretrained_front_end(tmp_path, pictures, monkeypatch):
    """What the cache is given are files: every image's pixels are never in memory at once."""
    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path / "cache"))
    seen = []
    original = cached_region_set

    def spy(model, image_set, image_size, **kwargs):
        seen.extend(image_set.load(i).pixels for i in range(len(image_set)))
        return original(model, image_set, image_size, **kwargs)

    monkeypatch.setattr("teran_es.region_cache.cached_region_set", spy)
    holder = make_holder()
    holder.config = type("Config", (), {"image_size": 16})()
    regions = model_image_set(holder, pictures, name="p")
    assert len(seen) == 5 and all(pixels is None for pixels in seen)
    assert regions.load(0).features.shape == (4, 6)
