from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from teran_es.features.columnar import SCHEMA, ColumnarReader, ColumnarWriter, write_columnar
from teran_es.features.records import ImageRecord, RecordError


def make_records(count, split="train", dim=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        regions = int(rng.integers(1, 5))
        corner = rng.uniform(0, 0.5, (regions, 2))
        out.append(
            ImageRecord(
                image_id=f"{split}-{i}",
                features=rng.standard_normal((regions, dim)).astype(np.float32),
                boxes=np.concatenate([corner, corner + 0.4], axis=1).astype(np.float32),
                captions=[f"caption {j} of {split} {i}" for j in range(5)],
                split=split,
                path=f"/images/{split}/{i}.jpg",
            )
        )
    return out


def same(a: ImageRecord, b: ImageRecord) -> bool:
    return (
        a.image_id == b.image_id
        and a.split == b.split
        and a.captions == b.captions
        and a.path == b.path
        and np.array_equal(a.features, b.features)
        and np.array_equal(a.boxes, b.boxes)
    )


def test_round_trip_by_split(tmp_path):
    train, val = make_records(7, "train"), make_records(3, "val", seed=1)
    path = tmp_path / "d.parquet"
    assert write_columnar(path, train + val, row_group_size=4) == 10
    reader = ColumnarReader(path)
    assert reader.splits() == {"train": 7, "val": 3}
    assert all(same(a, b) for a, b in zip(reader.iter_records("train"), train, strict=True))
    assert all(same(a, b) for a, b in zip(reader.iter_records("val"), val, strict=True))
    assert len(list(reader.iter_records())) == 10
    # splits never share a row group, so a split read skips the others' groups entirely
    groups = pq.ParquetFile(path).metadata
    assert groups.num_row_groups == 3
    images = reader.image_set("val")
    assert images.image_ids == [r.image_id for r in val] and same(images.load(2), val[2])
    assert len(reader.image_set("train", limit=2)) == 2


def test_directory_of_shards(tmp_path):
    write_columnar(tmp_path / "a.parquet", make_records(2, "test"))
    write_columnar(tmp_path / "b.parquet", make_records(3, "test", seed=5))
    (tmp_path / "notes.txt").write_text("ignored")
    ids = [r.image_id for r in ColumnarReader(tmp_path).iter_records("test")]
    assert len(ids) == 5


def test_writer_refuses_bad_records_and_mixed_dims(tmp_path):
    good = make_records(1)[0]
    bad = make_records(1)[0]
    bad.features[0, 0] = np.nan
    with pytest.raises(RecordError, match="NaN"):
        with ColumnarWriter(tmp_path / "x.parquet") as writer:
            writer.write(bad)
    assert not list(tmp_path.iterdir())  # no half-written file left behind
    with pytest.raises(RecordError, match="expected 6"):
        with ColumnarWriter(tmp_path / "y.parquet") as writer:
            writer.write(good)
            writer.write(make_records(1, dim=3)[0])


def write_raw(path, rows):
    """Write rows straight through pyarrow, bypassing the writer's validation."""
    columns = {name: [row[name] for row in rows] for name in SCHEMA.names}
    pq.write_table(pa.table(columns, schema=SCHEMA), path)


def raw_row(image_id, n_regions=2, dim=3, features=None, boxes=None):
    return {
        "image_id": image_id,
        "split": "test",
        "n_regions": n_regions,
        "feature_dim": dim,
        "features": features if features is not None else [0.5] * (n_regions * dim),
        "boxes": boxes if boxes is not None else [0.1, 0.1, 0.5, 0.5] * n_regions,
        "captions": ["a caption"],
        "path": "",
    }


@pytest.mark.parametrize(
    "row, message",
    [
        (raw_row("bad", features=[0.5] * 5), "features hold 5 values"),
        (raw_row("bad", boxes=[0.1, 0.1, 0.5]), "boxes hold 3 values"),
        (raw_row("bad", features=[float("nan")] * 6), "NaN"),
        (raw_row("bad", boxes=[0.0, 0.0, float("inf"), 1.0] * 2), "NaN or Inf"),
        (raw_row("bad", boxes=[0, 0, 640, 480] * 2), "not normalised"),
    ],
)
def test_bad_rows_name_file_and_image(tmp_path, row, message, caplog):
    path = tmp_path / "bad.parquet"
    write_raw(path, [raw_row("ok-1"), row, raw_row("ok-2")])
    with pytest.raises(RecordError, match=message) as info:
        list(ColumnarReader(path).iter_records("test"))
    assert str(path) in str(info.value) and "'bad'" in str(info.value)
    with caplog.at_level(logging.WARNING):
        kept = [r.image_id for r in ColumnarReader(path, on_error="skip").iter_records("test")]
    assert kept == ["ok-1", "ok-2"]
    assert "'bad'" in caplog.text


def test_missing_file_and_foreign_schema(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        ColumnarReader(tmp_path / "nope.parquet")
    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(RecordError, match="other.parquet.*missing columns"):
        ColumnarReader(tmp_path / "other.parquet")


def test_expected_feature_dim_and_empty_split(tmp_path):
    write_columnar(tmp_path / "d.parquet", make_records(2, "train"))
    with pytest.raises(RecordError, match="expected 32"):
        list(ColumnarReader(tmp_path / "d.parquet", feature_dim=32).iter_records())
    with pytest.raises(RecordError, match="no images in split 'val'"):
        ColumnarReader(tmp_path / "d.parquet").image_set("val")


@pytest.mark.parametrize("content", [b"", b"not parquet at all, but long enough to hold a footer"])
def test_a_file_that_is_not_parquet_is_a_record_error_naming_it(tmp_path, content):
    path = tmp_path / "features.parquet"
    path.write_bytes(content)
    with pytest.raises(RecordError, match="features.parquet: not a readable Parquet file"):
        ColumnarReader(path)
