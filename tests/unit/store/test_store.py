"""FeatureStore: round trips, idempotent appends, reopening, mismatches, bad input, crashes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from teran_es.store import (
    FeatureStore,
    StoreError,
    StoreMismatchError,
    StoreNotFoundError,
    StoreNotWritableError,
    codec,
)
from teran_es.store import store as store_module
from teran_es.store.files import LOCK_NAME
from teran_es.store.manifest import MANIFEST_NAME

DIM = 8
MODEL = "teran-test-model-1"


def unit_regions(count: int, seed: int, dim: int = DIM) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def sample(n_items: int, seed: int = 0, prefix: str = "img") -> tuple[list[str], list[np.ndarray]]:
    """``n_items`` ids with between 1 and 6 unit region vectors each."""
    counts = np.random.default_rng(seed).integers(1, 7, size=n_items)
    return [f"{prefix}{k}" for k in range(n_items)], [
        unit_regions(int(c), seed * 1000 + k) for k, c in enumerate(counts)
    ]


def create(path, dtype="fp16", shard_size=4, **kwargs) -> FeatureStore:
    return FeatureStore.open(
        path, create=True, dim=DIM, dtype=dtype, model_fingerprint=MODEL, shard_size=shard_size, **kwargs
    )


def assert_regions(store: FeatureStore, ids: list[str], expected: list[np.ndarray], dtype: str) -> None:
    regions, mask = store.get_many(ids)
    assert regions.dtype == torch.float32 and mask.dtype == torch.bool
    assert regions.shape == (len(ids), max(len(e) for e in expected), DIM)
    for k, want in enumerate(expected):
        n = len(want)
        assert mask[k, :n].all() and not mask[k, n:].any()
        assert not regions[k, n:].any()  # padding is zero
        got = regions[k, :n].numpy().astype(np.float64)
        assert (np.abs(got - want) <= codec.error_bound(want, dtype)).all()
        if dtype == "fp32":
            np.testing.assert_array_equal(regions[k, :n].numpy(), want)


@pytest.mark.parametrize("dtype", codec.DTYPES)
def test_round_trip_with_variable_region_counts(tmp_path, dtype):
    ids, regions = sample(11)
    with create(tmp_path / "s", dtype=dtype) as store:
        assert store.add(ids, regions) == (11, 0)
        assert_regions(store, ids, regions, dtype)  # pending and committed shards alike
    store = FeatureStore.open(tmp_path / "s", model_fingerprint=MODEL)
    assert len(store) == 11 and store.stats()["shards"] == 3  # shard_size 4: 4 + 4 + 3
    order = [7, 0, 10, 3, 3]
    assert_regions(store, [ids[k] for k in order], [regions[k] for k in order], dtype)
    store.close()


@pytest.mark.parametrize("dtype", codec.DTYPES)
def test_get_codes_decodes_to_get_many(tmp_path, dtype):
    ids, regions = sample(6, seed=5)
    with create(tmp_path / "s", dtype=dtype) as store:
        store.add(ids, regions)
        codes, scales, mask = store.get_codes(ids[::-1])
        decoded = torch.empty(codes.shape)
        codec.decode_into(decoded, codes, scales)
        want, want_mask = store.get_many(ids[::-1])
        assert torch.equal(decoded, want) and torch.equal(mask, want_mask)
        assert codes.dtype == codec.TORCH_DTYPE[dtype]


def test_ids_spread_over_committed_and_pending_shards_come_back_in_the_order_asked(tmp_path):
    ids, regions = sample(9, seed=3)
    for dtype in codec.DTYPES:
        with create(tmp_path / dtype, dtype=dtype) as store:  # shard_size 4: two shards + pending
            store.add(ids, regions)
            order = [8, 0, 5, 4, 1, 8, 3]
            assert_regions(store, [ids[k] for k in order], [regions[k] for k in order], dtype)
            nothing, no_mask = store.get_many([])
            assert nothing.shape == (0, 0, DIM) and no_mask.shape == (0, 0)


def test_readers_see_what_was_committed(tmp_path):
    ids, regions = sample(3)
    with create(tmp_path / "s", shard_size=100) as writer:
        writer.add(ids[:2], regions[:2])
        assert len(writer) == 2  # the writer sees its pending images at once
        assert len(FeatureStore.open(tmp_path / "s")) == 0
        writer.flush()
        assert len(FeatureStore.open(tmp_path / "s")) == 2
        writer.add(ids[2:], regions[2:])
    assert len(FeatureStore.open(tmp_path / "s")) == 3


def test_padded_input_with_mask_and_torch_tensors(tmp_path):
    padded = torch.from_numpy(unit_regions(3 * 5, 1).reshape(3, 5, DIM))
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 0, 0]], dtype=torch.bool)
    with create(tmp_path / "s", dtype="fp32") as store:
        store.add(["a", "b", "c"], padded, mask)
        store.add(["d"], padded[:1])  # no mask: every row is a region
        regions, got_mask = store.get_many(["c", "a", "d"])
    assert got_mask.sum(1).tolist() == [2, 2, 5]
    assert torch.equal(regions[0, :2], padded[2][mask[2]])
    assert torch.equal(regions[1, :2], padded[0, :2])
    assert torch.equal(regions[2], padded[0])


def test_adding_again_is_skipped_so_an_ingest_can_be_rerun(tmp_path):
    ids, regions = sample(6)
    with create(tmp_path / "s") as store:
        assert store.add(ids[:4], regions[:4]) == (4, 0)
        assert store.add(ids, regions) == (2, 4)
        assert store.add(["new", "new"], [regions[0], regions[1]]) == (1, 1)  # repeats within one call
    with FeatureStore.open(tmp_path / "s", writable=True) as store:
        assert store.add(ids, regions) == (0, 6)
        assert len(store) == 7
        assert store.stats()["rows"] == 7
        # The first version of a repeated id is the one kept.
        np.testing.assert_allclose(store.get_many(["new"])[0][0].numpy(), regions[0], atol=1e-3)


def test_reopen_and_append(tmp_path):
    ids, regions = sample(10)
    with create(tmp_path / "s", dtype="int8") as store:
        store.add(ids[:5], regions[:5])
    with FeatureStore.open(tmp_path / "s", create=True, dim=DIM, model_fingerprint=MODEL) as store:
        assert store.dtype == "int8"  # an existing store keeps its dtype
        assert store.add(ids, regions) == (5, 5)
    store = FeatureStore.open(tmp_path / "s")
    assert store.ids() == ids and store.contains(["img3", "nope", "img9"]) == {"img3", "img9"}
    assert "img0" in store and "nope" not in store
    assert_regions(store, ids, regions, "int8")
    manifest = json.loads((tmp_path / "s" / MANIFEST_NAME).read_text())
    assert manifest["counts"]["images"] == 10 and manifest["model_fingerprint"] == MODEL
    assert manifest["format_version"] == 1 and manifest["dim"] == DIM and manifest["kind"] == "regions"


def test_iter_batches_scans_every_live_item(tmp_path):
    ids, regions = sample(9)
    with create(tmp_path / "s", dtype="fp32") as store:
        store.add(ids, regions)
        store.delete(["img4"])
    store = FeatureStore.open(tmp_path / "s")
    seen = []
    for batch_ids, batch_regions, batch_mask in store.iter_batches(batch_size=4):
        assert len(batch_ids) == len(batch_regions) == len(batch_mask) <= 4
        for k, item_id in enumerate(batch_ids):
            want = regions[ids.index(item_id)]
            np.testing.assert_array_equal(batch_regions[k][batch_mask[k]].numpy(), want)
        seen += batch_ids
    assert seen == [i for i in ids if i != "img4"]


def test_delete_is_durable_and_an_id_can_come_back(tmp_path):
    ids, regions = sample(6)
    with create(tmp_path / "s", dtype="fp32") as store:
        store.add(ids, regions)
        assert store.delete(["img1", "img5", "never-there"]) == 2
        assert len(store) == 4 and "img1" not in store
    with FeatureStore.open(tmp_path / "s", writable=True) as store:
        assert store.ids() == ["img0", "img2", "img3", "img4"]
        with pytest.raises(KeyError):
            store.get_many(["img1"])
        replacement = unit_regions(2, 99)
        assert store.add(["img1"], [replacement]) == (1, 0)
    store = FeatureStore.open(tmp_path / "s")
    assert len(store) == 5 and store.stats()["deleted"] == 1
    np.testing.assert_array_equal(store.get_many(["img1"])[0][0].numpy(), replacement)


def test_positions_give_storage_order(tmp_path):
    ids, regions = sample(6)
    with create(tmp_path / "s") as store:
        store.add(ids, regions)
        store.delete(["img0"])
        store.add(["img0"], [regions[0]])  # stored again: now the last row
        asked = ["img3", "img0", "img1"]
        positions = store.positions(asked)
        assert [asked[k] for k in np.argsort(positions)] == ["img1", "img3", "img0"]
        with pytest.raises(KeyError, match="'nope'"):
            store.positions(["nope"])


def test_unknown_ids_raise_key_error_naming_them(tmp_path):
    ids, regions = sample(3)
    with create(tmp_path / "s") as store:
        store.add(ids, regions)
        with pytest.raises(KeyError, match="7 of 8 ids.*'x0', 'x1', 'x2', 'x3', 'x4' and 2 more"):
            store.get_many(["img0"] + [f"x{k}" for k in range(7)])
        with pytest.raises(TypeError):
            store.get_many("img0")
        regions_out, mask = store.get_many([])
        assert regions_out.shape == (0, 0, DIM) and mask.shape == (0, 0)


def test_other_model_fingerprint_is_refused(tmp_path):
    create(tmp_path / "s").close()
    with pytest.raises(StoreMismatchError, match="built by another model.*Rebuild.*checkpoint"):
        FeatureStore.open(tmp_path / "s", model_fingerprint="some-other-model")
    with pytest.raises(StoreMismatchError):
        FeatureStore.open(tmp_path / "s", create=True, dim=DIM, model_fingerprint="some-other-model")
    with pytest.raises(StoreMismatchError, match="dimensional"):
        FeatureStore.open(tmp_path / "s", dim=DIM + 1)
    with pytest.raises(StoreMismatchError, match="fp16, not int8"):
        FeatureStore.open(tmp_path / "s", dtype="int8")
    with pytest.raises(StoreMismatchError, match="words"):
        FeatureStore.open(tmp_path / "s", kind="words")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.full((2, DIM), np.nan, np.float32), "NaN"),
        (np.array([[np.inf] + [0.0] * (DIM - 1)], np.float32), "NaN, infinite"),
        (np.full((1, DIM), 70000.0, np.float32), "out-of-range"),  # beyond fp16
        (np.ones((2, DIM + 1), np.float32), r"shape \[n, 8\]"),
        (np.ones((0, DIM), np.float32), "no regions"),
        (np.ones(DIM, np.float32), r"shape \[n, 8\]"),
    ],
)
def test_bad_regions_name_the_id_and_lose_nothing(tmp_path, bad, message):
    ids, regions = sample(5)
    with create(tmp_path / "s") as store:
        store.add(ids[:3], regions[:3])
        store.flush()
        with pytest.raises(ValueError, match=message) as raised:
            store.add(["fine", "broken"], [regions[3], bad])
        assert "'broken'" in str(raised.value)
        assert "fine" not in store and len(store) == 3  # the whole call was refused
        assert store.add(ids[3:], regions[3:]) == (2, 0)
    store = FeatureStore.open(tmp_path / "s")
    assert_regions(store, ids, regions, "fp16")


def test_bad_padded_input_names_the_ids(tmp_path):
    padded = np.ones((2, 3, DIM), np.float32)
    with create(tmp_path / "s", dtype="fp32") as store:
        with pytest.raises(ValueError, match=r"'a', 'b'.*8 components, got 9"):
            store.add(["a", "b"], np.ones((2, 3, DIM + 1), np.float32))
        with pytest.raises(ValueError, match="'b'.*no regions"):
            store.add(["a", "b"], padded, np.array([[1, 0, 0], [0, 0, 0]], bool))
        with pytest.raises(ValueError, match="'b'.*NaN"):
            store.add(["a", "b"], np.where(np.arange(2)[:, None, None] == 1, np.nan, padded))
        assert len(store) == 0
        # Large finite values overflow a row sum but are fine for fp32.
        assert store.add(["big"], [np.full((2, DIM), 3e38, np.float32)]) == (1, 0)


def test_bad_call_shapes_are_refused(tmp_path):
    with create(tmp_path / "s") as store:
        with pytest.raises(ValueError, match="2 ids but regions for 1"):
            store.add(["a", "b"], [unit_regions(1, 0)])
        with pytest.raises(ValueError, match="mask must have shape"):
            store.add(["a"], np.ones((1, 3, DIM), np.float32), np.ones((1, 4), bool))
        with pytest.raises(ValueError, match="non-empty strings"):
            store.add([""], [unit_regions(1, 0)])
        with pytest.raises(TypeError):
            store.add("a", [unit_regions(1, 0)])
        assert len(store) == 0


def test_orphan_shard_from_a_crash_is_ignored_then_removed(tmp_path, monkeypatch):
    ids, regions = sample(8)
    with create(tmp_path / "s", dtype="fp32") as store:
        store.add(ids[:4], regions[:4])  # shard 0, committed
    manifest_before = (tmp_path / "s" / MANIFEST_NAME).read_bytes()

    # Crash between writing shard 1 and replacing the manifest.
    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    store = FeatureStore.open(tmp_path / "s", writable=True)
    monkeypatch.setattr(store_module, "write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        store.add(ids[4:], regions[4:])
    os.close(store._lock_fd)  # what the kernel does when the process dies
    monkeypatch.undo()
    assert (tmp_path / "s" / "shard-00001.arrow").exists()
    assert (tmp_path / "s" / MANIFEST_NAME).read_bytes() == manifest_before
    (tmp_path / "s" / ".shard-00002.arrow.tmp").write_bytes(b"half a shard")

    reader = FeatureStore.open(tmp_path / "s")  # readers trust the manifest only
    assert reader.ids() == ids[:4]
    assert_regions(reader, ids[:4], regions[:4], "fp32")

    with FeatureStore.open(tmp_path / "s", writable=True) as store:  # the next writer cleans up
        assert not (tmp_path / "s" / "shard-00001.arrow").exists()
        assert not (tmp_path / "s" / ".shard-00002.arrow.tmp").exists()
        assert store.add(ids, regions) == (4, 4)  # re-running the ingest completes it
    assert_regions(FeatureStore.open(tmp_path / "s"), ids, regions, "fp32")


def test_changed_or_missing_shard_is_reported(tmp_path):
    ids, regions = sample(4)
    with create(tmp_path / "s") as store:
        store.add(ids, regions)
    shard = tmp_path / "s" / "shard-00000.arrow"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(StoreError, match="truncated"):
        FeatureStore.open(tmp_path / "s")
    shard.unlink()
    with pytest.raises(StoreError, match="missing"):
        FeatureStore.open(tmp_path / "s")


def test_missing_store_and_missing_arguments(tmp_path):
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        FeatureStore.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreNotFoundError, match="manifest.json is missing"):
        FeatureStore.open(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):  # StoreNotFoundError is one
        FeatureStore.open(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="model_fingerprint"):
        FeatureStore.open(tmp_path / "new", create=True, dim=DIM)
    with pytest.raises(ValueError, match="dim"):
        FeatureStore.open(tmp_path / "new", create=True, model_fingerprint=MODEL)
    with pytest.raises(ValueError, match="unknown feature store dtype"):
        FeatureStore.open(tmp_path / "new", create=True, dim=DIM, dtype="fp8", model_fingerprint=MODEL)


def test_read_only_store_refuses_writes(tmp_path):
    create(tmp_path / "s").close()
    store = FeatureStore.open(tmp_path / "s")
    assert not store.writable
    with pytest.raises(StoreNotWritableError, match="read-only"):
        store.add(["a"], [unit_regions(1, 0)])
    with pytest.raises(StoreNotWritableError):
        store.delete(["a"])


def test_unwritable_directory_is_a_clear_error(tmp_path, monkeypatch):
    create(tmp_path / "s").close()
    real_open = os.open

    def denied(path, flags, *args):
        if str(path).endswith(LOCK_NAME):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    # chmod does not stop root, so the refusal is simulated where the store first writes.
    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(StoreNotWritableError, match="cannot write.*writable=False"):
        FeatureStore.open(tmp_path / "s", writable=True)
    monkeypatch.undo()
    assert len(FeatureStore.open(tmp_path / "s")) == 0  # reading still works


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_permissions(tmp_path):
    create(tmp_path / "s").close()
    (tmp_path / "s" / ".lock").unlink()
    os.chmod(tmp_path / "s", 0o555)
    try:
        with pytest.raises(StoreNotWritableError):
            FeatureStore.open(tmp_path / "s", writable=True)
        assert len(FeatureStore.open(tmp_path / "s")) == 0
    finally:
        os.chmod(tmp_path / "s", 0o755)


def test_one_writer_at_a_time(tmp_path):
    with create(tmp_path / "s"):
        with pytest.raises(StoreError, match="already open for writing"):
            FeatureStore.open(tmp_path / "s", writable=True)
        FeatureStore.open(tmp_path / "s").close()  # readers are welcome
    FeatureStore.open(tmp_path / "s", writable=True).close()


def test_closed_store_refuses_reads(tmp_path):
    store = create(tmp_path / "s")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get_many([])


def test_word_embeddings_share_the_format(tmp_path):
    with FeatureStore.open(
        tmp_path / "w", create=True, dim=DIM, model_fingerprint=MODEL, kind="words"
    ) as store:
        store.add(["caption-1"], [unit_regions(12, 3)])
    store = FeatureStore.open(tmp_path / "w", kind="words")
    assert store.kind == "words" and store.get_many(["caption-1"])[1].sum() == 12
