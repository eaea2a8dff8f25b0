"""The query bank a checkpoint carries (teran_es/model/bank.py): validation, fingerprint, the
file, and the round trip through save_checkpoint / load_checkpoint."""

from __future__ import annotations

import json

import pytest

from teran_es.model.bank import BANK_FILE, QueryBank, QueryBankError, read_query_bank, write_query_bank
from teran_es.model.checkpoint import load_checkpoint, model_fingerprint, save_checkpoint


@pytest.mark.parametrize(
    ("texts", "beta"),
    [((), 5.0), (("a cat", ""), 5.0), (("a cat", "  "), 5.0), (("a cat", "a cat"), 5.0), (("a cat",), 0.0),
     (("a cat",), -1.0), (("a cat",), float("nan")), (("a cat",), float("inf")), (("a cat",), "5")],
)
def test_a_bad_bank_is_refused(texts, beta):
    with pytest.raises(QueryBankError):
        QueryBank(texts, beta)


def test_the_fingerprint_follows_texts_order_and_beta_not_the_source():
    bank = QueryBank(("a cat", "a dog"), 5.0, source="here")
    assert bank.fingerprint == QueryBank(("a cat", "a dog"), 5, source="elsewhere").fingerprint
    assert bank.fingerprint != QueryBank(("a dog", "a cat"), 5.0).fingerprint
    assert bank.fingerprint != QueryBank(("a cat", "a dog"), 3.0).fingerprint
    assert bank.fingerprint != QueryBank(("a cat",), 5.0).fingerprint


def test_the_file_round_trips(tmp_path):
    bank = QueryBank(("a cat", "red heart", "flag: Italy", "ünïcödé ❤"), 5.0, source="train split")
    write_query_bank(tmp_path, bank)
    assert read_query_bank(tmp_path) == bank
    assert not list(tmp_path.glob("*.tmp"))


def test_no_file_means_no_bank(tmp_path):
    assert read_query_bank(tmp_path) is None


@pytest.mark.parametrize(
    "content",
    ["not json", json.dumps([1, 2]), json.dumps({"format_version": 99, "beta": 5, "texts": ["a"]}),
     json.dumps({"format_version": 1, "beta": 5, "texts": "a cat"}),
     json.dumps({"format_version": 1, "beta": 0, "texts": ["a cat"]}),
     json.dumps({"format_version": 1, "beta": 5, "texts": ["a cat", "a cat"]})],
)
def test_a_bad_file_is_refused_with_its_path(tmp_path, content):
    (tmp_path / BANK_FILE).write_text(content)
    with pytest.raises(QueryBankError, match=BANK_FILE):
        read_query_bank(tmp_path)


def test_a_checkpoint_carries_its_bank_and_the_bank_leaves_the_fingerprint_alone(tmp_path, make_model):
    model = make_model(seed=3)
    plain = model_fingerprint(model)
    model.query_bank = QueryBank(("a dog runs", "a red car"), 5.0)
    save_checkpoint(model, tmp_path / "ckpt", model.config)
    loaded, _, meta = load_checkpoint(tmp_path / "ckpt")
    assert loaded.query_bank == model.query_bank
    assert model_fingerprint(loaded) == plain == meta["fingerprint"]


def test_saving_a_model_without_a_bank_removes_an_earlier_one(tmp_path, make_model):
    model = make_model(seed=3)
    model.query_bank = QueryBank(("a dog runs",), 5.0)
    save_checkpoint(model, tmp_path, model.config)
    model.query_bank = None
    save_checkpoint(model, tmp_path, model.config)
    assert not (tmp_path / BANK_FILE).exists()
    assert load_checkpoint(tmp_path)[0].query_bank is None
