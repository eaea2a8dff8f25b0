from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from teran_es.config import DataConfig
from teran_es.features import detect_format, open_image_set
from teran_es.features.bottom_up import BottomUpReader
from teran_es.features.records import RecordError

SIZES = {10: (640, 480), 20: (500, 400), 30: (320, 320), 40: (100, 200)}
DIM = 8


def write_features(root, image_id, regions=3, seed=0, width=100, height=100):
    rng = np.random.default_rng(seed)
    (root / "bu_att").mkdir(exist_ok=True)
    (root / "bu_box").mkdir(exist_ok=True)
    np.savez(root / "bu_att" / f"{image_id}.npz", feat=rng.standard_normal((regions, DIM)).astype(np.float32))
    x1 = rng.uniform(0, width / 2, regions)
    y1 = rng.uniform(0, height / 2, regions)
    boxes = np.stack([x1, y1, x1 + width / 3, y1 + height / 3], axis=1).astype(np.float32)
    np.save(root / "bu_box" / f"{image_id}.npy", boxes)
    return boxes


@pytest.fixture
def coco_root(tmp_path):
    """COCO-style layout: annotation JSON with sizes and captions, VSE++ id lists."""
    images, annotations = [], []
    annotation_id = 100
    for image_id, (w, h) in SIZES.items():
        write_features(tmp_path, image_id, seed=image_id, width=w, height=h)
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"COCO_{image_id:012d}.jpg"})
        for j in range(5):
            annotations.append(
                {"id": annotation_id, "image_id": image_id, "caption": f"image {image_id} caption {j} "}
            )
            annotation_id += 1
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_val2014.json").write_text(
        json.dumps({"images": images, "annotations": annotations})
    )
    # test list holds annotation (caption) ids as VSE++'s do; dev and train hold image ids
    np.save(tmp_path / "coco_test_ids.npy", np.array([100 + k for k in range(10)]))
    np.save(tmp_path / "coco_dev_ids.npy", np.array([30]))
    np.save(tmp_path / "coco_train_ids.npy", np.array([40]))
    return tmp_path


def test_coco_layout_reads_normalised_records(coco_root):
    reader = BottomUpReader(coco_root)
    assert reader.split_ids("test") == ["10", "20"]
    assert reader.split_ids("val") == ["30"] and reader.split_ids("dev") == ["30"]
    assert reader.split_ids("train") == ["40"]  # no restval list: train alone
    records = list(reader.iter_records("test"))
    assert [r.image_id for r in records] == ["10", "20"]
    pixel = np.load(coco_root / "bu_box" / "10.npy")
    np.testing.assert_allclose(records[0].boxes, pixel / np.array([640, 480, 640, 480]), rtol=1e-6)
    assert records[0].features.shape == (3, DIM) and records[0].split == "test"
    assert records[0].captions == [f"image 10 caption {j}" for j in range(5)]
    assert records[0].path == "COCO_000000000010.jpg"
    assert detect_format(coco_root) == "bottom-up"


def test_restval_joins_train(coco_root):
    np.save(coco_root / "coco_restval_ids.npy", np.array([10]))
    assert BottomUpReader(coco_root).split_ids("train") == ["40", "10"]


def test_open_image_set_reads_lazily(coco_root):
    images = open_image_set(DataConfig(format="bottom-up", path=str(coco_root)), "test", feature_dim=DIM)
    assert images.image_ids == ["10", "20"] and len(images.captions[1]) == 5
    np.save(coco_root / "bu_box" / "20.npy", np.zeros((2, 4)))  # damaged after opening
    assert images.load(0).image_id == "10"
    with pytest.raises(RecordError, match="20"):
        images.load(1)


@pytest.mark.parametrize(
    "damage, message, culprit",
    [
        (lambda root: (root / "bu_att" / "20.npz").unlink(), "feature file not found", "bu_att/20.npz"),
        (lambda root: (root / "bu_box" / "20.npy").unlink(), "box file not found", "bu_box/20.npy"),
        (
            lambda root: np.savez(root / "bu_att" / "20.npz", other=np.zeros((3, DIM))),
            "no 'feat'",
            "bu_att/20.npz",
        ),
        (
            lambda root: (root / "bu_att" / "20.npz").write_bytes(b"junk"),
            "cannot read feature file",
            "bu_att/20.npz",
        ),
        (
            lambda root: np.save(root / "bu_box" / "20.npy", np.zeros((3, 5))),
            "expected \\(regions, 4\\)",
            "bu_box/20.npy",
        ),
        (
            lambda root: np.save(root / "bu_box" / "20.npy", np.zeros((2, 4))),
            "region counts differ",
            "bu_att/20.npz",
        ),
        (
            lambda root: np.savez(root / "bu_att" / "20.npz", feat=np.full((3, DIM), np.inf, np.float32)),
            "NaN or Inf",
            "bu_att/20.npz",
        ),
        (
            lambda root: np.save(root / "bu_box" / "20.npy", np.full((3, 4), 5000.0, np.float32)),
            "outside \\[0, 1\\]",
            "bu_att/20.npz",
        ),
    ],
)
def test_bad_files_are_named_and_skippable(coco_root, damage, message, culprit, caplog):
    damage(coco_root)
    with pytest.raises(RecordError, match=message) as info:
        list(BottomUpReader(coco_root).iter_records("test"))
    assert culprit in str(info.value) and "'20'" in str(info.value)
    with caplog.at_level(logging.WARNING):
        kept = [r.image_id for r in BottomUpReader(coco_root, on_error="skip").iter_records("test")]
    assert kept == ["10"] and culprit in caplog.text


def test_missing_files_found_before_training(coco_root):
    (coco_root / "bu_att" / "10.npz").unlink()
    with pytest.raises(RecordError, match="bu_att/10.npz"):
        BottomUpReader(coco_root).image_set("test")
    assert BottomUpReader(coco_root, on_error="skip").image_set("test").image_ids == ["20"]


def test_id_list_matching_nothing_is_an_error(coco_root):
    np.save(coco_root / "coco_test_ids.npy", np.array([999999]))
    with pytest.raises(RecordError, match="coco_test_ids.npy.*match neither"):
        BottomUpReader(coco_root).split_ids("test")


def test_unknown_size_is_named(coco_root):
    write_features(coco_root, 77)
    with pytest.raises(RecordError, match="'77'.*width/height unknown"):
        BottomUpReader(coco_root).load("77")


def test_karpathy_flickr_layout(tmp_path):
    """Flickr30k: feature files named by position in dataset_flickr30k.json, sizes from a JSON."""
    entries = []
    for position, split in enumerate(["train", "train", "val", "test"]):
        write_features(tmp_path, position, seed=position, width=200, height=100)
        entries.append(
            {
                "filename": f"{1000 + position}.jpg",
                "imgid": position,
                "split": split,
                "sentences": [{"raw": f"photo {position} sentence {j}."} for j in range(5)],
            }
        )
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps({"images": entries}))
    sizes = tmp_path / "sizes.json"
    sizes.write_text(json.dumps({str(i): [200, 100] for i in range(4)}))
    reader = BottomUpReader(tmp_path, sizes_json=sizes, captions_per_image=5)
    assert reader.split_ids("train") == ["0", "1"] and reader.split_ids("test") == ["3"]
    record = next(reader.iter_records("val"))
    assert record.image_id == "2" and record.captions[0] == "photo 2 sentence 0."
    assert record.boxes.max() <= 1.0 and record.path == "1002.jpg"


def test_sizes_from_the_images(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (300, 150)).save(tmp_path / "img" / "a.jpg")
    write_features(tmp_path, 0, width=300, height=150)
    karpathy = {"images": [{"filename": "a.jpg", "split": "test", "sentences": [{"raw": "x"}]}]}
    (tmp_path / "dataset_flickr8k.json").write_text(json.dumps(karpathy))
    record = next(BottomUpReader(tmp_path, image_dir=tmp_path / "img").iter_records("test"))
    pixel = np.load(tmp_path / "bu_box" / "0.npy")
    np.testing.assert_allclose(record.boxes, pixel / np.array([300, 150, 300, 150]), rtol=1e-6)
    assert record.path == str(tmp_path / "img" / "a.jpg")


def test_karpathy_coco_uses_cocoid_and_coco_sizes(coco_root):
    entries = [
        {
            "cocoid": 10,
            "filepath": "val2014",
            "filename": "x.jpg",
            "split": "test",
            "sentences": [{"raw": "K"}] * 5,
        },
        {
            "cocoid": 30,
            "filepath": "val2014",
            "filename": "y.jpg",
            "split": "restval",
            "sentences": [{"raw": "R"}] * 5,
        },
    ]
    (coco_root / "dataset_coco.json").write_text(json.dumps({"images": entries}))
    for name in ("test", "dev", "train"):
        (coco_root / f"coco_{name}_ids.npy").unlink()
    reader = BottomUpReader(coco_root)
    assert reader.split_ids("test") == ["10"] and reader.split_ids("train") == ["30"]
    record = reader.load("10")
    assert record.captions == ["K"] * 5  # Karpathy's captions win over the annotation file's
    np.testing.assert_allclose(
        record.boxes, np.load(coco_root / "bu_box" / "10.npy") / [640, 480, 640, 480], rtol=1e-6
    )
