"""The authors' folders (features_36/, annotations/, sizes.pkl) read as they lie on disk."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

from teran_es.config import DataConfig
from teran_es.features import RecordError, detect_format, open_image_set
from teran_es.features.authors_layout import authors_reader_options, is_authors_layout


def _data(root) -> DataConfig:
    return DataConfig(format="bottom-up", path=str(root), captions_per_image=5, max_regions=36)


def test_fixture_has_the_authors_file_names_and_dtypes(authors_data):
    root = authors_data("coco")
    names = sorted(p.name for p in (root / "annotations").iterdir())
    assert names == [
        "captions_train2014.json",
        "captions_val2014.json",
        "coco_dev_ids.npy",
        "coco_restval_ids.npy",
        "coco_test_ids.npy",
        "coco_train_ids.npy",
    ]
    first = sorted((root / "features_36" / "bu_att").iterdir())[0]
    with np.load(first) as archive:
        assert archive.files == ["feat"] and archive["feat"].dtype == np.float32
        assert archive["feat"].shape == (36, 2048)
    boxes = np.load(root / "features_36" / "bu_box" / (first.stem + ".npy"))
    assert boxes.dtype == np.float32 and boxes.shape == (36, 4) and boxes.max() > 1  # pixels
    assert np.load(root / "annotations" / "coco_test_ids.npy").dtype == np.int64


def test_coco_splits_captions_and_normalised_boxes(authors_data):
    root = authors_data("coco")
    assert is_authors_layout(root) and detect_format(root) == "bottom-up"
    test = open_image_set(_data(root), "test", feature_dim=2048)
    assert len(test) == 6
    captions, owners = test.caption_index()
    assert len(captions) == 30 and np.bincount(owners).tolist() == [5] * 6
    # the captions of the annotation file, in the order of the id list
    annotations = json.loads((root / "annotations" / "captions_val2014.json").read_text())
    first_id = int(np.load(root / "annotations" / "coco_test_ids.npy")[0])
    first = next(a for a in annotations["annotations"] if a["id"] == first_id)
    assert str(first["image_id"]) == test.image_ids[0] and captions[0] == first["caption"].strip()
    record = test.load(0)
    image = next(i for i in annotations["images"] if str(i["id"]) == record.image_id)
    raw = np.load(root / "features_36" / "bu_box" / f"{record.image_id}.npy")
    expected = raw / np.array([image["width"], image["height"]] * 2, dtype=np.float32)
    np.testing.assert_allclose(record.boxes, np.clip(expected, 0, 1), rtol=1e-6)
    assert len(open_image_set(_data(root), "train")) == 4  # train + restval, as in the paper
    assert len(open_image_set(_data(root), "val")) == 2


def test_flickr30k_by_position_with_the_size_cache(authors_data):
    root = authors_data("f30k", feature_dim=64)
    options = authors_reader_options(root)
    assert options["sizes_json"].name == "sizes.pkl"
    test = open_image_set(_data(root), "test", feature_dim=64)
    dataset = json.loads((root / "annotations" / "dataset_flickr30k.json").read_text())["images"]
    positions = [i for i, image in enumerate(dataset) if image["split"] == "test"]
    assert test.image_ids == [str(p) for p in positions]
    sizes = pickle.loads((root / "images" / "sizes.pkl").read_bytes())
    record = test.load(1)
    width, height = sizes[positions[1]]
    raw = np.load(root / "features_36" / "bu_box" / f"{positions[1]}.npy")
    np.testing.assert_allclose(record.boxes, np.clip(raw / np.array([width, height] * 2), 0, 1), rtol=1e-6)
    assert test.caption_index()[0][:5] == [s["raw"] for s in dataset[positions[0]]["sentences"]]


def _copy(root, tmp_path):
    target = tmp_path / root.name
    shutil.copytree(root, target)
    return target


def test_broken_json_names_the_file_and_line(authors_data, tmp_path):
    root = _copy(authors_data("f30k", feature_dim=8), tmp_path)
    path = root / "annotations" / "dataset_flickr30k.json"
    text = json.dumps(json.loads(path.read_text()), indent=1).splitlines()
    text[7] = text[7] + " oops"
    path.write_text("\n".join(text))
    with pytest.raises(RecordError, match=r"dataset_flickr30k\.json: line 8, column \d+: not valid JSON"):
        open_image_set(_data(root), "test")


def test_bad_entries_are_named(authors_data, tmp_path):
    root = _copy(authors_data("coco", feature_dim=8), tmp_path)
    ids = np.load(root / "annotations" / "coco_test_ids.npy")
    ids[3] = 987654321
    np.save(root / "annotations" / "coco_test_ids.npy", ids)
    with pytest.raises(RecordError, match=r"coco_test_ids\.npy: entry 3 \(id 987654321\): no such annotation id"):
        open_image_set(_data(root), "test")
    annotations = root / "annotations" / "captions_val2014.json"
    content = json.loads(annotations.read_text())
    del content["annotations"][2]["caption"]
    annotations.write_text(json.dumps(content))
    with pytest.raises(RecordError, match=r"captions_val2014\.json: annotations\[2\]: entry without image_id/caption"):
        open_image_set(_data(root), "test")


def test_missing_feature_file_is_named(authors_data, tmp_path):
    root = _copy(authors_data("coco", feature_dim=8), tmp_path)
    last = open_image_set(_data(root), "test").image_ids[-1]
    victim = root / "features_36" / "bu_box" / f"{last}.npy"
    victim.unlink()
    with pytest.raises(RecordError, match=str(victim).replace(".", r"\.")):
        open_image_set(_data(root), "test")


def test_size_cache_holding_objects_is_refused(authors_data, tmp_path):
    root = _copy(authors_data("f30k", feature_dim=8), tmp_path)
    (root / "images" / "sizes.pkl").write_bytes(pickle.dumps([np.array([640, 480])]))  # names a class
    with pytest.raises(RecordError, match=r"sizes\.pkl: not a pickled size list: refusing to load"):
        open_image_set(_data(root), "test")
    (root / "images" / "sizes.pkl").write_bytes(pickle.dumps([(640, 480), (1, 2, 3)]))
    with pytest.raises(RecordError, match=r"sizes\.pkl: entry 1: "):
        open_image_set(_data(root), "test")
