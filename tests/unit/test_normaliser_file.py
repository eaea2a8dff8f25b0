"""The bank-normaliser file of a work directory (teran_es/normaliser_file.py)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from teran_es.normaliser_file import (
    NormaliserFileError,
    read_fresh_normalisers,
    read_normalisers,
    write_normalisers,
)


def test_it_round_trips_values_and_fingerprints(tmp_path):
    path = tmp_path / "n.parquet"
    values = {"b": 0.25, "a": -1.5, "ünï/c": 3.0000000001}
    write_normalisers(path, "model-fp", "bank-fp", values)
    saved = read_normalisers(path)
    assert saved.values == values
    assert saved.matches("model-fp", "bank-fp")
    assert not saved.matches("model-fp", "other") and not saved.matches("other", "bank-fp")
    assert not list(tmp_path.glob("*.tmp"))


def test_writing_replaces_the_old_file(tmp_path):
    path = tmp_path / "n.parquet"
    write_normalisers(path, "m", "b", {"a": 1.0, "b": 2.0})
    write_normalisers(path, "m", "b", {"c": 3.0})
    assert read_normalisers(path).values == {"c": 3.0}


def test_no_file_reads_as_none(tmp_path):
    assert read_normalisers(tmp_path / "missing.parquet") is None


def test_a_file_that_is_not_one_is_refused(tmp_path):
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 not really")
    with pytest.raises(NormaliserFileError, match="unreadable"):
        read_normalisers(garbage)
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"id": ["a"], "score": [1.0]}), other)
    with pytest.raises(NormaliserFileError, match="not a bank-normaliser file"):
        read_normalisers(other)


def test_only_a_file_of_this_model_and_bank_is_fresh(tmp_path):
    path = tmp_path / "n.parquet"
    assert read_fresh_normalisers(path, "m", "b") == (None, "")  # no file: nothing to say
    write_normalisers(path, "m", "b", {"a": 1.0})
    assert read_fresh_normalisers(path, "m", "b") == ({"a": 1.0}, "")
    for model, bank in (("other", "b"), ("m", "other")):
        values, why = read_fresh_normalisers(path, model, bank)
        assert values is None and "another model or query bank" in why
    path.write_bytes(b"not parquet")
    values, why = read_fresh_normalisers(path, "m", "b")
    assert values is None and "unreadable" in why
