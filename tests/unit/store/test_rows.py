"""The row table: the live row of an id, and gathering codes across shards into padded batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from teran_es.store.rows import RowTable


def test_later_rows_replace_earlier_and_forgotten_ids_are_gone():
    table = RowTable(Path("s"))
    table.add(0, ["a", "b"], np.array([0, 2]), np.array([2, 1]))
    table.add(1, ["a"], np.array([0]), np.array([3]))
    assert len(table) == 3 and table.row_of == {"a": 2, "b": 1}
    assert table.forget("b") and not table.forget("b")
    with pytest.raises(KeyError, match=r"1 of 2 ids are not in the feature store s: 'b'"):
        table.rows(["a", "b"])
    with pytest.raises(TypeError):
        table.rows("a")


def test_gather_pads_and_reads_each_id_from_its_shard():
    table = RowTable(Path("s"))
    table.add(0, ["a", "b"], np.array([0, 2]), np.array([2, 1]))
    table.add(1, ["c"], np.array([0]), np.array([3]))
    shard0 = torch.arange(3 * 2, dtype=torch.float32).reshape(3, 2)
    shard1 = 100 + torch.arange(3 * 2, dtype=torch.float32).reshape(3, 2)
    codes, scales, mask = table.gather(["c", "a", "b"], [shard0, shard1], [None, None], 2, "fp32")
    assert scales is None
    assert mask.tolist() == [[True, True, True], [True, True, False], [True, False, False]]
    assert torch.equal(codes[0], shard1)
    assert torch.equal(codes[1, :2], shard0[:2]) and not codes[1, 2].any()
    assert torch.equal(codes[2, 0], shard0[2]) and not codes[2, 1:].any()
