from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from teran_es.training import TrainingError, train
from teran_es.training_batches import build_text_cache, caption_pairs, collate
from teran_es.training_step import StepWarmupSchedule, build_optimizer


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_schedule_warms_up_then_steps():
    schedule = StepWarmupSchedule(iters_per_epoch=10, warmup_iters=4, step_epochs=2, gamma=0.1)
    assert [schedule(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(19) == 1.0 and schedule(20) == pytest.approx(0.1) and schedule(40) == pytest.approx(0.01)
    assert StepWarmupSchedule(10, 0, 0, 0.1)(1000) == 1.0


def test_batches_and_parameter_groups(tiny_pipeline):
    from teran_es.features import open_image_set
    from teran_es.model.teran import TERAN

    config = tiny_pipeline("train.lr=0.01", "train.lr_backbone=0.001", "train.optimizer=adamw")
    images = open_image_set(config.data, "train", limit=4)
    pairs = caption_pairs(images)
    assert pairs.shape == (20, 2) and pairs[:6, 0].tolist() == [0, 0, 0, 0, 0, 1]
    model = TERAN(config.model)
    batch = collate(images, pairs[[0, 7, 19]], model.tokenize)
    assert batch["features"].shape[0] == 3 and batch["region_mask"].dtype == torch.bool
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[0] == 3
    optimizer = build_optimizer(model, config.train)
    assert isinstance(optimizer, torch.optim.AdamW)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"text_backbone": 0.001, "rest": 0.01}
    counted = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert counted == sum(p.numel() for p in model.parameters())


def test_text_cache_only_for_a_wholly_frozen_backbone_that_fits(tiny_pipeline):
    from teran_es.features import open_image_set
    from teran_es.model.teran import TERAN

    frozen = tiny_pipeline("model.text_trainable_layers=0")
    images = open_image_set(frozen.data, "train", limit=4)
    model = TERAN(frozen.model)
    cpu = torch.device("cpu")
    images.captions[2] = images.captions[2][:2]  # ragged: one image with fewer captions
    cache = build_text_cache(model, images, 64, cpu, progress=False)
    assert cache is not None and len(cache) == len(caption_pairs(images))
    picked = np.array([0, 11, 7, 7, len(cache) - 1])
    pairs = caption_pairs(images)[picked]
    cached = collate(images, pairs, model.tokenize, text_cache=cache, positions=picked)
    plain = collate(images, pairs, model.tokenize)
    assert torch.equal(cached["input_ids"], plain["input_ids"]) and "text_states" not in plain
    with pytest.raises(ValueError, match="positions"):
        collate(images, pairs, model.tokenize, text_cache=cache)
    assert build_text_cache(model, images, 0, cpu, progress=False) is None  # switched off
    size_mb = cache.nbytes / 2**20
    assert build_text_cache(model, images, size_mb * 0.9, cpu, progress=False) is None  # too big
    assert build_text_cache(model, images, size_mb * 1.1, cpu, progress=False) is not None
    trained = TERAN(tiny_pipeline("model.text_trainable_layers=1").model)
    assert build_text_cache(trained, images, 64, cpu, progress=False) is None


def test_training_with_cached_text_states_equals_running_the_backbone(tiny_pipeline, tmp_path, caplog):
    caplog.set_level("INFO", logger="teran_es")  # the training modules log under it
    runs = {}
    for name, budget in (("cached", 64), ("plain", 0)):
        runs[name] = train(
            tiny_pipeline(
                "model.text_trainable_layers=0", f"train.text_cache_max_mb={budget}", output_dir=tmp_path / name
            ),
            progress=False,
        )
    losses = {name: [r["loss"] for r in read_metrics(tmp_path / name) if r["event"] == "train"] for name in runs}
    assert losses["cached"] == pytest.approx(losses["plain"], rel=1e-4)
    assert runs["cached"].best_rsum == pytest.approx(runs["plain"].best_rsum, abs=0.5)
    assert sum("cached the frozen text backbone's states" in r.getMessage() for r in caplog.records) == 1


def test_training_learns_and_writes_run(tiny_pipeline, tmp_path):
    run = tmp_path / "run"
    result = train(tiny_pipeline("train.epochs=2", output_dir=run), progress=False)
    assert result.epochs_completed == 2 and result.iterations == 60  # 600 pairs / 20 per batch
    for name in (
        "config.toml",
        "metrics.jsonl",
        "last/meta.json",
        "last/training_state.pt",
        "best/meta.json",
    ):
        assert (run / name).is_file(), name
    records = read_metrics(run)
    train_lines = [r for r in records if r["event"] == "train"]
    val_lines = [r for r in records if r["event"] == "val"]
    assert len(val_lines) == 2
    assert {"epoch", "iteration", "loss", "lr", "lr_backbone", "pairs_per_s", "elapsed"} <= set(
        train_lines[0]
    )
    assert {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum", "elapsed"} <= set(
        val_lines[0]
    )
    assert train_lines[-1]["loss"] < 0.7 * train_lines[0]["loss"]
    # 40 validation images: chance RSUM is about 3 x 2.5% ... 25%, i.e. well under 100
    assert result.best_rsum > 150
    assert result.best_rsum == max(v["rsum"] for v in val_lines)
    meta = json.loads((run / "best" / "meta.json").read_text())
    assert meta["extra"]["val"]["rsum"] == result.best_rsum


def test_resume_continues_exactly(tiny_pipeline, tmp_path):
    from teran_es.model.checkpoint import model_fingerprint

    straight = train(tiny_pipeline("train.epochs=2", output_dir=tmp_path / "a"), progress=False)
    first = train(tiny_pipeline("train.epochs=1", output_dir=tmp_path / "b"), progress=False)
    assert first.epochs_completed == 1
    resumed = train(tiny_pipeline("train.epochs=2", output_dir=tmp_path / "b"), progress=False)
    assert resumed.resumed_from_epoch == 1 and resumed.iterations == straight.iterations
    assert model_fingerprint(tmp_path / "a" / "last") == model_fingerprint(tmp_path / "b" / "last")
    assert resumed.best_rsum == pytest.approx(straight.best_rsum)
    # a finished run has nothing left to do
    again = train(tiny_pipeline("train.epochs=2", output_dir=tmp_path / "b"), progress=False)
    assert again.resumed_from_epoch == 2 and again.iterations == straight.iterations


def test_a_resumed_run_takes_the_schedule_of_its_config(tiny_pipeline, tmp_path):
    # 30 iterations per epoch; the first run would step the lr down after 5 epochs
    first = train(
        tiny_pipeline("train.epochs=1", "train.lr_step_epochs=5", output_dir=tmp_path / "run"), progress=False
    )
    assert first.epochs_completed == 1
    resumed = train(
        tiny_pipeline("train.epochs=2", "train.lr_step_epochs=1", output_dir=tmp_path / "run"), progress=False
    )
    assert resumed.resumed_from_epoch == 1
    lines = [r for r in read_metrics(tmp_path / "run") if r["event"] == "train"]
    base = tiny_pipeline().train.lr
    assert lines[0]["lr"] == pytest.approx(base)  # epoch 1: before any step
    # the last line is logged after the scheduler's step that ends epoch 2: two steps down with
    # the resumed config's lr_step_epochs=1 (the saved schedule, 5, would have kept the base lr)
    gamma = tiny_pipeline().train.lr_gamma
    assert lines[-1]["epoch"] == 2 and lines[-1]["lr"] == pytest.approx(base * gamma**2)


def test_resume_refuses_another_model_and_restart_ignores_last(tiny_pipeline, tmp_path):
    train(tiny_pipeline("train.epochs=1", "train.val_images=10", output_dir=tmp_path / "r"), progress=False)
    with pytest.raises(TrainingError, match="embed_dim"):
        train(
            tiny_pipeline("train.epochs=2", "model.embed_dim=16", output_dir=tmp_path / "r"), progress=False
        )
    result = train(
        tiny_pipeline(
            "train.epochs=1", "model.embed_dim=16", "train.val_images=10", output_dir=tmp_path / "r"
        ),
        restart=True,
        progress=False,
    )
    assert result.resumed_from_epoch == 0 and result.iterations == 30
    assert len([r for r in read_metrics(tmp_path / "r") if r["event"] == "val"]) == 1


def test_validation_every_n_iterations(tiny_pipeline, tmp_path):
    run = tmp_path / "v"
    train(tiny_pipeline("train.val_every=10", "train.val_images=10", output_dir=run), progress=False)
    iterations = [r["iteration"] for r in read_metrics(run) if r["event"] == "val"]
    assert iterations == [10, 20, 30]


def test_bad_data_is_reported(tiny_pipeline, tmp_path):
    config = tiny_pipeline(output_dir=tmp_path / "x")
    config.data.path = str(tmp_path / "missing.parquet")
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        train(config, progress=False)


def test_the_checkpoints_carry_the_configured_query_bank(tiny_pipeline, synthetic_dataset, tmp_path):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from teran_es.model.bank import read_query_bank
    from teran_es.model.checkpoint import load_checkpoint

    table = pq.read_table(synthetic_dataset.data_path)
    train_captions = {c for caps in table.filter(pc.equal(table.column("split"), "train")).column("captions").to_pylist()
                      for c in caps}
    run = tmp_path / "run"
    config = tiny_pipeline("train.query_bank_beta=3.5", "train.query_bank_size=7", output_dir=run)
    train(config, progress=False)
    for which in ("best", "last"):
        bank = read_query_bank(run / which)
        assert bank is not None and bank.beta == 3.5 and len(bank.texts) == 7
        assert set(bank.texts) <= train_captions
    assert load_checkpoint(run / "best")[0].query_bank == bank
    everything = tmp_path / "all"
    train(tiny_pipeline("train.query_bank_beta=1", "train.query_bank_size=0", output_dir=everything), progress=False)
    assert set(read_query_bank(everything / "best").texts) == train_captions
    plain = tmp_path / "plain"
    train(tiny_pipeline(output_dir=plain), progress=False)
    assert read_query_bank(plain / "best") is None


@pytest.mark.parametrize("setting", ["train.query_bank_beta=-1", "train.query_bank_beta=nan", "train.query_bank_size=-5"])
def test_a_bad_query_bank_setting_is_refused_when_the_pipeline_loads(tiny_pipeline, setting):
    from teran_es.config import ConfigError

    with pytest.raises(ConfigError, match="query_bank"):
        tiny_pipeline(setting)
