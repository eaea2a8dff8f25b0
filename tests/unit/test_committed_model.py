"""The committed demo model (models/emoji-lite0-minilm) is found from a checkout and from an
installed package, and is a complete checkpoint: no network, no training."""

from __future__ import annotations

import configparser
import importlib.resources
from pathlib import Path

from teran_es import demo
from teran_es.model.checkpoint import META_FILE, WEIGHTS_FILE, model_fingerprint, read_meta

REPO = Path(__file__).resolve().parents[2]


def test_the_locator_finds_the_committed_model():
    directory = demo.committed_openmoji_checkpoint()
    assert directory is not None and directory.is_dir()
    assert (directory / WEIGHTS_FILE).is_file() and (directory / META_FILE).is_file()
    # complete and intact: the weights are the ones meta.json names
    assert model_fingerprint(directory) == read_meta(directory)["fingerprint"]


def test_an_installed_package_is_found_when_there_is_no_checkout(tmp_path, monkeypatch):
    """As from a wheel: teran_es/ without models/ beside it, the model as package data."""
    installed = tmp_path / "site-packages" / "teran_es"
    installed.mkdir(parents=True)
    shipped = installed / "models" / demo.OPENMOJI_MODEL
    shipped.mkdir(parents=True)
    (installed / "models" / "__init__.py").write_text("")
    for name in (META_FILE, WEIGHTS_FILE):
        (shipped / name).write_bytes(b"{}")
    monkeypatch.setattr(demo.teran_es, "__file__", str(installed / "__init__.py"))
    monkeypatch.setattr(
        importlib.resources, "files", lambda package: installed / "models" if package == "teran_es.models" else None
    )
    assert demo.committed_openmoji_checkpoint() == shipped
    (shipped / WEIGHTS_FILE).unlink()  # an incomplete copy is no model
    assert demo.committed_openmoji_checkpoint() is None


def test_no_model_anywhere_means_none(tmp_path, monkeypatch):
    monkeypatch.setattr(demo.teran_es, "__file__", str(tmp_path / "teran_es" / "__init__.py"))

    def not_installed(package):
        raise ModuleNotFoundError(package)

    monkeypatch.setattr(importlib.resources, "files", not_installed)
    assert demo.committed_openmoji_checkpoint() is None


def test_the_wheel_ships_every_file_of_the_model():
    """setup.cfg maps models/ to the package teran_es.models and its globs cover the model's
    files (the wheel itself is built and listed by hand: see the README)."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    assert "teran_es.models = models" in config["options"]["package_dir"]
    globs = config["options.package_data"]["teran_es.models"].split()
    model = REPO / "models" / demo.OPENMOJI_MODEL
    files = {p.relative_to(REPO / "models").as_posix() for p in model.rglob("*") if p.is_file()}
    covered = {f for f in files if any(Path(f).match(g) and f.count("/") == g.count("/") for g in globs)}
    assert files and covered == files
    assert (REPO / "models" / "__init__.py").is_file()
    assert "teran_es.models" in (REPO / "setup.py").read_text()


def test_the_pipeline_in_pipelines_gives_the_committed_model():
    """pipelines/emoji-lite0-tuned.toml is how the committed model was trained: the same model,
    training (but for the threads given on the command line) and data settings, and its
    expected validation RSUM is the one the checkpoint recorded."""
    import dataclasses

    from teran_es.config import load_config
    from teran_es.model.bank import read_query_bank

    pipeline = load_config(REPO / "pipelines" / "emoji-lite0-tuned.toml")
    directory = REPO / "models" / demo.OPENMOJI_MODEL
    committed = load_config(directory / "config.toml")
    assert pipeline.model == committed.model and pipeline.data == committed.data
    # the committed model got its query bank after training, from `teran-es query-bank` with the
    # defaults these two settings repeat: the bank it carries is checked below instead
    bank_settings = {"query_bank_beta": pipeline.train.query_bank_beta, "query_bank_size": pipeline.train.query_bank_size}
    assert dataclasses.replace(committed.train, cpu_threads=pipeline.train.cpu_threads, **bank_settings) == pipeline.train
    bank = read_query_bank(directory)
    assert bank is not None and bank.beta == pipeline.train.query_bank_beta == 5.0
    assert len(bank.texts) == pipeline.train.query_bank_size == 2000
    assert bank.source == "2000 distinct captions of the train split of emoji-multi, seed 0"
    assert committed.expected_metrics == pipeline.expected_metrics
    assert pipeline.model.frontend == "efficientnet-lite0" and pipeline.model.frontend_trainable_blocks == 4
    recorded = read_meta(directory)["extra"]["val"]["rsum"]
    assert round(recorded, 2) == pipeline.expected_metrics["val_rsum"]
