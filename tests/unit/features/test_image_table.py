"""Reading a built image collection by its layout alone: table, manifest, image files."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from teran_es.config import DataConfig
from teran_es.errors import ConfigError
from teran_es.features import open_image_set
from teran_es.features.image_table import (
    MANIFEST_NAME,
    TABLE_NAME,
    is_image_collection,
    iter_collection_images,
    read_image_groups,
)


@pytest.fixture
def collection(tmp_path):
    rows = [
        {"image_id": "a", "split": "train", "path": "images/a.png", "captions": ["one", "two"], "extra": 1},
        {"image_id": "b", "split": "val", "path": "images/b.png", "captions": ["three"], "extra": 2},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / TABLE_NAME)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"counts": {"total": 2}}))
    return tmp_path


def test_a_collection_needs_its_table_and_its_manifest(collection, tmp_path):
    assert is_image_collection(collection)
    (collection / MANIFEST_NAME).unlink()
    assert not is_image_collection(collection)
    assert not is_image_collection(tmp_path / "nowhere")


def test_images_come_with_absolute_paths_captions_and_splits(collection):
    images = list(iter_collection_images(collection))
    assert [(i.image_id, i.split, i.captions) for i in images] == [
        ("a", "train", ["one", "two"]),
        ("b", "val", ["three"]),
    ]
    assert images[0].path == str(collection.resolve() / "images" / "a.png")
    assert [i.image_id for i in iter_collection_images(collection, "val")] == ["b"]


def test_a_missing_table_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{TABLE_NAME} is missing.*openmoji build"):
        list(iter_collection_images(tmp_path))


def test_the_reader_does_not_pick_a_default_collection():
    with pytest.raises(ValueError, match="data.path is empty"):
        open_image_set(DataConfig(format="openmoji", path=""), "test", image_size=32)


def test_image_groups_are_read_from_a_column_and_a_missing_one_is_refused(collection, tmp_path):
    assert read_image_groups(collection, "extra") == {"a": "1", "b": "2"}
    with pytest.raises(ConfigError, match=r"no 'concept' column.*set train\.positive_groups = \"image\""):
        read_image_groups(collection, "concept")
    with pytest.raises(FileNotFoundError, match="is missing"):
        read_image_groups(tmp_path / "nowhere", "concept")
