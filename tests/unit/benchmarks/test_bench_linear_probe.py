"""benchmarks/bench_linear_probe.py: the probe learns a planted linear relation and carries it
to groups it never saw; pooling matches the front end by hand; a small run writes every protocol."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import bench_linear_probe  # noqa: E402

from teran_es.generalisation import build_protocols, group_ranks  # noqa: E402


def _planted(seed: int = 0, groups: int = 40, per_group: int = 3):
    """Images and texts of the same group are linear images of one hidden vector, plus noise."""
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(groups, 6))
    image_map, text_map = rng.normal(size=(6, 12)), rng.normal(size=(6, 10))
    image_groups = np.repeat(np.arange(groups), per_group)
    images = hidden[image_groups] @ image_map + 0.1 * rng.normal(size=(len(image_groups), 12))
    texts = hidden @ text_map + 0.1 * rng.normal(size=(groups, 10))  # one text per group, row = group
    return images.astype(np.float32), texts.astype(np.float32), image_groups


def _unseen_t2i_r1(image_map, text_map, images, texts, groups, unseen):
    with torch.no_grad():
        zi = F.normalize(image_map(torch.from_numpy(images)), dim=-1)
        zt = F.normalize(text_map(torch.from_numpy(texts[unseen])), dim=-1)
    ranks = group_ranks((zt @ zi.T).numpy(), unseen, groups)
    return float(np.mean(ranks < 1))


def test_the_probe_carries_a_planted_relation_to_unseen_groups():
    images, texts, groups = _planted()
    seen, unseen = np.arange(30), np.arange(30, 40)
    pairs = np.asarray([(i, g) for i, g in enumerate(groups) if g in set(seen)], dtype=np.int64)
    fitted = bench_linear_probe.fit_linear_probe(images, texts, pairs, groups, dim=8, epochs=60, batch_size=32, lr=1e-2)
    untrained = bench_linear_probe.fit_linear_probe(images, texts, pairs, groups, dim=8, epochs=0)
    # 10 unseen groups among 40: chance R@1 is ~2.5 %
    assert _unseen_t2i_r1(*fitted, images, texts, groups, unseen) >= 0.8
    assert _unseen_t2i_r1(*untrained, images, texts, groups, unseen) <= 0.5


def test_pooled_regions_are_the_mean_of_the_front_end_regions(tiny_emoji):
    from teran_es.collections.emoji_multi import read_rows
    from teran_es.generalisation_eval import collection_image_set
    from teran_es.model.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(tiny_emoji["checkpoint"])
    rows = read_rows(tiny_emoji["collection"])
    image_set = collection_image_set(model, rows, tiny_emoji["collection"])
    pooled = bench_linear_probe.pooled_regions(model, image_set, batch_size=4)
    assert pooled.shape == (len(rows), model.config.region_feature_dim)
    pixels = torch.from_numpy(image_set.load(5).load_pixels(model.config.image_size)).permute(2, 0, 1)[None]
    with torch.no_grad():
        regions, _ = model.frontend(pixels)
    np.testing.assert_allclose(pooled[5], regions[0].mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_a_small_run_writes_probe_and_teran_for_every_protocol(tiny_emoji, tmp_path, monkeypatch):
    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bench_linear_probe, "build_emoji_collection", lambda progress: tiny_emoji["collection"])
    out = tmp_path / "probe.json"
    bench_linear_probe.main(["--checkpoint", str(tiny_emoji["checkpoint"]), "--dim", "8", "--epochs", "2",
                             "--threads", "1", "--no-progress", "--out", str(out)])
    written = json.loads(out.read_text())
    assert set(written["protocols"]) == {"unseen", "heldout", "openmoji"}
    protocols = build_protocols(tiny_emoji["rows"])
    for name, entry in written["protocols"].items():
        for side in ("probe", "teran"):
            for direction in ("t2i", "i2t"):
                r = entry[side][direction]
                assert 0 <= r["r1"] <= r["r5"] <= r["r10"] <= 100
            kinds = entry[side]["t2i_by_kind"]  # every text query in one kind, and none twice
            assert kinds and sum(v["queries"] for v in kinds.values()) == len(protocols[name].texts)
    assert written["probe"]["train_pairs"] == 2 * 5 * 2  # 2 artists in training x 5 train concepts x 2 captions


def test_pooled_regions_of_a_tuned_front_end_run_its_tail_on_the_trunk_maps(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from teran_es.features.pixels import ImageFile, image_file_set
    from teran_es.model.efficientnet import EfficientNetLite
    from teran_es.model.pretrained_frontend import PretrainedRegions
    from teran_es.model.teran import TERAN
    from teran_es.region_cache import cached_trunk_set

    torch.manual_seed(0)
    network = EfficientNetLite(((1, 3, 1, 1, 8, 4), (2, 3, 2, 2, 4, 6)), head_channels=8, classes=3).eval()
    model = SimpleNamespace(  # what pooled_regions and the cache use of a TERAN
        frontend=PretrainedRegions(network, block=2, grid=2, trainable_blocks=1),
        config=SimpleNamespace(image_size=16),
        device=torch.device("cpu"),
    )
    model.image_regions = lambda **inputs: TERAN.image_regions(model, **inputs)  # the model's own, on the stand-in
    rng = np.random.default_rng(0)
    files = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        files.append(ImageFile(str(i), str(tmp_path / f"{i}.png"), ["a picture"]))
    pixels_set = image_file_set(files, 16)
    trunk_set = cached_trunk_set(model, pixels_set, 16, cache_dir=tmp_path / "cache", progress=False)
    pooled = bench_linear_probe.pooled_regions(model, trunk_set)
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack([pixels_set.load(i).pixels for i in range(3)]).transpose(0, 3, 1, 2).copy())
        expected = model.frontend(pixels)[0].mean(1).numpy()
    assert pooled.shape == (3, 6)
    np.testing.assert_allclose(pooled, expected, rtol=5e-3, atol=5e-3)  # the trunk maps are cached in fp16


def test_frontend_specs_name_a_known_backbone_and_a_size():
    import pytest

    assert bench_linear_probe.parse_frontend("efficientnet-lite2") == ("efficientnet-lite2", 260)
    assert bench_linear_probe.parse_frontend("efficientnet-lite0@96") == ("efficientnet-lite0", 96)
    with pytest.raises(SystemExit, match="unknown front end 'resnet50'"):
        bench_linear_probe.parse_frontend("resnet50")
    with pytest.raises(SystemExit, match="whole number of pixels"):
        bench_linear_probe.parse_frontend("efficientnet-lite1@big")


def test_another_frozen_front_end_is_probed_beside_the_checkpoint(tiny_emoji, tmp_path, monkeypatch):
    """The real Lite0 weights (a dependency), frozen at 64 px on the tiny collection: its own
    figures for every protocol, its last block's width, the text backbone shared."""
    from teran_es.model.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(tiny_emoji["checkpoint"])
    other = bench_linear_probe.frozen_frontend_model(model, "efficientnet-lite0", 64)
    assert other.textual.backbone is model.textual.backbone
    assert other.frontend.frozen and other.config.frontend_block == 15 and other.config.region_feature_dim == 320

    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bench_linear_probe, "build_emoji_collection", lambda progress: tiny_emoji["collection"])
    out = tmp_path / "probe.json"
    bench_linear_probe.main(["--checkpoint", str(tiny_emoji["checkpoint"]), "--dim", "8", "--epochs", "2",
                             "--threads", "1", "--no-progress", "--no-teran", "--frontends", "efficientnet-lite0@64",
                             "--out", str(out)])
    written = json.loads(out.read_text())
    entry = written["frontends"]["efficientnet-lite0@64"]
    assert (entry["frontend"], entry["image_size"], entry["block"], entry["image_dim"]) == ("efficientnet-lite0", 64, 15, 320)
    assert entry["train_pairs"] == written["probe"]["train_pairs"]
    assert set(entry["protocols"]) == {"unseen", "heldout", "openmoji"}
    for figures in entry["protocols"].values():
        r = figures["t2i"]
        assert 0 <= r["r1"] <= r["r5"] <= r["r10"] <= 100


def test_mean_figures_averages_every_number_but_query_counts():
    runs = [{"t2i": {"r1": 10.0, "r10": 40.0}, "t2i_by_kind": {"single": {"r10": 20.0, "queries": 7}}},
            {"t2i": {"r1": 20.0, "r10": 50.0}, "t2i_by_kind": {"single": {"r10": 30.0, "queries": 7}}}]
    assert bench_linear_probe.mean_figures(runs) == {
        "t2i": {"r1": 15.0, "r10": 45.0}, "t2i_by_kind": {"single": {"r10": 25.0, "queries": 7}}}


def test_several_seeds_report_their_mean_and_each_seed(tiny_emoji, tmp_path, monkeypatch):
    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bench_linear_probe, "build_emoji_collection", lambda progress: tiny_emoji["collection"])
    written = {}
    for seeds, seed in (("2", "0"), ("1", "0"), ("1", "1")):
        out = tmp_path / f"probe-{seeds}-{seed}.json"
        bench_linear_probe.main(["--checkpoint", str(tiny_emoji["checkpoint"]), "--dim", "8", "--epochs", "3",
                                 "--threads", "1", "--no-progress", "--no-teran", "--seeds", seeds, "--seed", seed,
                                 "--out", str(out)])
        written[seeds, seed] = json.loads(out.read_text())["protocols"]
    for name, entry in written["2", "0"].items():
        by_seed = [written["1", s][name]["probe"]["t2i"]["r10"] for s in ("0", "1")]
        assert entry["probe"]["t2i_r10_by_seed"] == by_seed
        assert abs(entry["probe"]["t2i"]["r10"] - sum(by_seed) / 2) < 0.01


def test_collection_size_is_passed_to_the_collection_build(tiny_emoji, tmp_path, monkeypatch):
    asked = []

    def build(progress, **kwargs):
        asked.append(kwargs)
        return tiny_emoji["collection"]

    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bench_linear_probe, "build_emoji_collection", build)
    out = tmp_path / "probe.json"
    bench_linear_probe.main(["--checkpoint", str(tiny_emoji["checkpoint"]), "--dim", "8", "--epochs", "1",
                             "--threads", "1", "--no-progress", "--no-teran", "--collection-size", "48",
                             "--out", str(out)])
    assert asked == [{"size": 48}]
    assert json.loads(out.read_text())["collection"]["size"] == 48
