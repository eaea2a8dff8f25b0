"""Fixtures shared across the test tree: a seeded synthetic dataset written in the columnar
format, with a tiny random BERT text backbone on disk, and a tiny pipeline config to train
on it. Heavy imports stay inside the fixtures."""

from __future__ import annotations

import pytest


def pytest_configure(config):
    # The test models are tiny: torch's per-operation threading overhead dominates them, and on
    # a busy 2-core machine several threads per process make the suite several times slower.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """A small :class:`SyntheticDataset` (120 train / 40 val / 40 test images, feature dim 32)
    with its tiny text backbone; read-only, shared by the session."""
    from teran_es.features.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic"), train_images=120, val_images=40, test_images=40, seed=7
    )


@pytest.fixture(scope="session")
def tiny_text_backbone(synthetic_dataset):
    """Directory of a tiny random BERT (tokenizer included) covering the synthetic words."""
    return synthetic_dataset.text_backbone


@pytest.fixture
def tiny_pipeline(synthetic_dataset, tmp_path):
    """Factory: a PipelineConfig for a tiny TERAN on ``synthetic_dataset``, training into a
    fresh directory under tmp_path; ``overrides`` are ``section.field=value`` strings."""
    from teran_es.config import load_config
    from teran_es.features.synthetic import tiny_model_overrides

    def make(*overrides: str, output_dir=None):
        base = [
            *tiny_model_overrides(synthetic_dataset.text_backbone),
            "train.epochs=1",
            "train.batch_size=20",
            "train.lr=1e-3",
            "train.lr_backbone=1e-3",
            "train.warmup_iters=5",
            "train.log_every=5",
            "train.device=cpu",
            f"train.output_dir={output_dir or tmp_path / 'run'}",
            "train.val_images=40",
            f"data.path={synthetic_dataset.data_path}",
        ]
        return load_config(None, base + list(overrides))

    return make


@pytest.fixture(scope="session")
def png_header():
    """Function ``(width, height) -> bytes``: a PNG that claims that many pixels and holds none.
    Readers learn the size from the header, so this is how an enormous image (or a
    decompression bomb) first looks to them."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def make(width: int, height: int) -> bytes:
        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")

    return make


@pytest.fixture(scope="session")
def tiny_quantizer():
    """Overrides for the quantizer (and the ingest and rerank devices) the end-to-end tests use with tiny models."""
    return (
        "quantizer.gamma=16",
        "quantizer.doc_gamma=64",
        "quantizer.sample_size=2000",
        "ingest.device=cpu",
        "search.device=cpu",
    )


@pytest.fixture(scope="session")
def ingest_tiny(synthetic_dataset):
    """Function ``ingest_tiny(config, n=40)``: ingest the first ``n`` synthetic images with a
    seeded random tiny TERAN as ``config`` says; returns ``(model, records, report)``."""

    def run(config, n: int = 40, seed: int = 0):
        import torch

        from teran_es.features.columnar import ColumnarReader
        from teran_es.indexer import Ingestor
        from teran_es.model.teran import build_model

        torch.manual_seed(seed)
        model = build_model(config.model).eval()
        records = list(ColumnarReader(synthetic_dataset.data_path).iter_records())[:n]
        with Ingestor(config, model=model) as ingestor:
            report = ingestor.ingest(records)
        return model, records, report

    return run


# -- the TERAN authors' on-disk layout, in miniature -------------------------------------------

AUTHORS_WORDS = ("a", "dog", "cat", "man", "red", "car", "runs", "on", "the", "grass", "street", "with", "ball")


def _authors_captions(rng, count: int) -> list[str]:
    return [" ".join(rng.choice(AUTHORS_WORDS, size=int(rng.integers(4, 9)))) + " ." for _ in range(count)]


def _write_features(root, image_id, rng, feature_dim: int, size: tuple[int, int], regions: int = 36) -> None:
    """bu_att/<id>.npz ("feat": [36, F] float32) and bu_box/<id>.npy ([36, 4] float32 pixels)."""
    import numpy as np

    width, height = size
    x1 = rng.uniform(0, width * 0.6, regions)
    y1 = rng.uniform(0, height * 0.6, regions)
    boxes = np.stack(
        [x1, y1, x1 + rng.uniform(1, width * 0.4, regions), y1 + rng.uniform(1, height * 0.4, regions)], axis=1
    ).astype(np.float32)
    features = np.abs(rng.standard_normal((regions, feature_dim))).astype(np.float32)
    np.savez_compressed(root / "bu_att" / f"{image_id}.npz", feat=features)
    np.save(root / "bu_box" / f"{image_id}.npy", boxes)


@pytest.fixture(scope="session")
def authors_data(tmp_path_factory):
    """Factory ``(dataset, feature_dim=2048, test_images=6) -> Path``: a few images of COCO or
    Flickr30k in the TERAN authors' layout, with their file names and dtypes (see
    teran_es/features/authors_layout.py); random features, captions over ``AUTHORS_WORDS``.

    COCO: annotations/captions_{train,val}2014.json, annotations/coco_{train,dev,test,restval}_ids.npy
    (caption ids, int64), features_36/bu_att/<coco id>.npz, features_36/bu_box/<coco id>.npy.
    Flickr30k: annotations/dataset_flickr30k.json, features named by position, images/sizes.pkl.
    """
    import json
    import pickle

    import numpy as np

    def make(dataset: str, feature_dim: int = 2048, test_images: int = 6, seed: int = 0):
        rng = np.random.default_rng(seed)
        root = tmp_path_factory.mktemp(f"authors-{dataset}")
        features = root / "features_36"
        (features / "bu_att").mkdir(parents=True)
        (features / "bu_box").mkdir()
        (root / "annotations").mkdir()
        splits = {"train": 3, "dev": 2, "test": test_images, "restval": 1}
        if dataset == "coco":
            files: dict[str, dict] = {name: {"images": [], "annotations": []} for name in ("train2014", "val2014")}
            lists: dict[str, list[int]] = {}
            image_id, caption_id = 9, 100
            for split, count in splits.items():
                lists[split] = []
                target = files["train2014" if split == "train" else "val2014"]
                for _ in range(count):
                    image_id += int(rng.integers(1, 50))
                    size = (int(rng.integers(300, 640)), int(rng.integers(300, 640)))
                    target["images"].append(
                        {"id": image_id, "width": size[0], "height": size[1], "file_name": f"COCO_{image_id:012d}.jpg"}
                    )
                    for caption in _authors_captions(rng, 5):
                        caption_id += int(rng.integers(1, 9))
                        target["annotations"].append({"id": caption_id, "image_id": image_id, "caption": caption})
                        lists[split].append(caption_id)
                    _write_features(features, image_id, rng, feature_dim, size)
            for name, content in files.items():
                (root / "annotations" / f"captions_{name}.json").write_text(json.dumps(content))
            for split, ids in lists.items():
                np.save(root / "annotations" / f"coco_{split}_ids.npy", np.asarray(ids, dtype=np.int64))
        elif dataset == "f30k":
            images, sizes = [], []
            karpathy = {"train": "train", "dev": "val", "test": "test", "restval": "train"}
            for split, count in splits.items():
                for _ in range(count):
                    position = len(images)
                    size = (int(rng.integers(300, 640)), int(rng.integers(300, 640)))
                    sentences = [{"raw": c, "tokens": c.split()} for c in _authors_captions(rng, 5)]
                    images.append(
                        {"filename": f"{1000 + position}.jpg", "imgid": position, "split": karpathy[split], "sentences": sentences}
                    )
                    sizes.append(size)
                    _write_features(features, position, rng, feature_dim, size)
            (root / "annotations" / "dataset_flickr30k.json").write_text(
                json.dumps({"images": images, "dataset": "flickr30k"})
            )
            (root / "images").mkdir()
            with (root / "images" / "sizes.pkl").open("wb") as fh:
                pickle.dump(sizes, fh)
        else:
            raise ValueError(dataset)
        return root

    return make


# -- a small real OpenMoji collection, ingested, and `teran-es serve` over it ---------------

TINY_OPENMOJI_IDS = (
    "openmoji-2764",  # red heart
    "openmoji-1F497",  # growing heart
    "openmoji-1FA77",  # pink heart
    "openmoji-1F9E1",  # orange heart
    "openmoji-1F431",  # cat face
    "openmoji-1F408",  # cat
    "openmoji-1F355",  # pizza
    "openmoji-1F1EE-1F1F9",  # flag: Italy
)
TINY_OPENMOJI_TEST_IMAGES = 40
# rows whose files lie outside the collection directory (the server must refuse them)
ESCAPING_IDS = ("escape-dotdot", "escape-absolute", "escape-symlink")


def tiny_openmoji_overrides(collection, workdir, index_name="tiny-openmoji"):
    """Settings of the committed OpenMoji model over a collection of ~50 drawings."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    return [
        f"data.path={collection}",
        f"workdir={workdir}",
        f"checkpoint={repo / 'models' / 'openmoji-minilm'}",
        "quantizer.cells=0",  # chosen for the ~800 regions
        "quantizer.sample_size=4096",
        f"index.name={index_name}",
        "ingest.device=cpu",
        "search.device=cpu",
    ]


def build_tiny_openmoji(root):
    """A collection of the drawings above, 40 of the test split and three rows whose files
    escape the directory, copied out of the full OpenMoji build (built once, cached);
    returns the collection directory."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from teran_es.collections.openmoji import build_openmoji

    source = build_openmoji(progress=False)
    table = pq.read_table(source / "collection.parquet")
    rows = table.to_pylist()
    keep = [r for r in rows if r["image_id"] in TINY_OPENMOJI_IDS]
    keep += [r for r in rows if r["split"] == "test" and r["image_id"] not in TINY_OPENMOJI_IDS][
        :TINY_OPENMOJI_TEST_IMAGES
    ]
    collection = root / "collection"
    (collection / "images").mkdir(parents=True)
    for row in keep:
        shutil.copy(source / row["path"], collection / row["path"])
    outside = root / "outside.png"  # a file next to the collection, not in it
    shutil.copy(source / keep[-1]["path"], outside)
    (collection / "images" / "link.png").symlink_to(outside)
    template = dict(keep[-1], captions=["a file outside the collection"], split="train")
    keep += [
        dict(template, image_id="escape-dotdot", path="../outside.png"),
        dict(template, image_id="escape-absolute", path=str(outside)),
        dict(template, image_id="escape-symlink", path="images/link.png"),
    ]
    pq.write_table(pa.Table.from_pylist(keep, schema=table.schema), collection / "collection.parquet")
    shutil.copy(source / "manifest.json", collection / "manifest.json")
    return collection


@pytest.fixture(scope="session")
def tiny_openmoji(tmp_path_factory):
    """{"collection", "workdir", "config"}: the tiny collection ingested into the embedded index
    with the committed model (about 15 s)."""
    from pathlib import Path

    from teran_es.config import load_config
    from teran_es.features.image_table import iter_collection_images
    from teran_es.indexer import Ingestor

    root = tmp_path_factory.mktemp("tiny-openmoji")
    collection = build_tiny_openmoji(root)
    pipeline = Path(__file__).resolve().parents[1] / "pipelines" / "openmoji.toml"
    config = load_config(pipeline, tiny_openmoji_overrides(collection, root / "work"))
    with Ingestor(config) as ingestor:
        ingestor.ingest(list(iter_collection_images(collection)), batch_size=64)
    return {"collection": collection, "workdir": root / "work", "config": config, "root": root}


@pytest.fixture(scope="session")
def tiny_openmoji_demo_model(tiny_openmoji):
    """{"workdir", "config"}: the same tiny collection ingested with the demo's committed model
    (EfficientNet-Lite0 regions and a query bank) into a work directory of its own."""
    from pathlib import Path

    from teran_es.config import load_config
    from teran_es.demo import committed_openmoji_checkpoint
    from teran_es.features.image_table import iter_collection_images
    from teran_es.indexer import Ingestor

    checkpoint = committed_openmoji_checkpoint()
    assert checkpoint is not None, "the committed demo model is part of the checkout"
    workdir = tiny_openmoji["root"] / "work-demo-model"
    pipeline = Path(__file__).resolve().parents[1] / "pipelines" / "openmoji.toml"
    config = load_config(pipeline, [*tiny_openmoji_overrides(tiny_openmoji["collection"], workdir),
                                    f"checkpoint={checkpoint}", "index.name=tiny-openmoji-demo-model"])
    with Ingestor(config) as ingestor:
        ingestor.ingest(list(iter_collection_images(tiny_openmoji["collection"])), batch_size=64)
    return {"workdir": workdir, "config": config}


@pytest.fixture(scope="session")
def tiny_openmoji_config():
    """Function ``(workdir, *overrides) -> PipelineConfig``: the tiny collection's pipeline with
    another work directory (and e.g. another backend)."""
    from pathlib import Path

    from teran_es.config import load_config

    pipeline = Path(__file__).resolve().parents[1] / "pipelines" / "openmoji.toml"

    def make(collection, workdir, *overrides: str):
        return load_config(pipeline, [*tiny_openmoji_overrides(collection, workdir), *overrides])

    return make


@pytest.fixture(scope="session")
def authors_text_backbone(tmp_path_factory):
    """A tiny random BERT (tokenizer included) whose vocabulary covers ``AUTHORS_WORDS``."""
    from teran_es.features.tiny_text import make_tiny_text_backbone

    return make_tiny_text_backbone(tmp_path_factory.mktemp("authors-bert"), AUTHORS_WORDS, layers=2)


@pytest.fixture(scope="session")
def authors_checkpoint(tmp_path_factory, authors_text_backbone):
    """Factory ``(feature_dim) -> Path``: a random TERAN ``.pth`` as the authors save theirs
    (``model`` under ``img_txt_enc.``, ``optimizer``, ``epoch``, ``config``, an ``opt`` Namespace),
    sized for the tiny text backbone: 2 visual and 2 shared layers, 4 heads, embed 16."""
    import argparse

    import torch
    import transformers
    from torch import nn

    def make(feature_dim: int = 24, embed: int = 16, seed: int = 0):
        torch.manual_seed(seed)
        config = transformers.AutoConfig.from_pretrained(str(authors_text_backbone), local_files_only=True)
        bert = transformers.BertModel(config, add_pooling_layer=True)
        hidden = config.hidden_size
        state = {"txt_enc.bert_model." + k: v for k, v in bert.state_dict().items()}
        state["txt_enc.word_embeddings.weight"] = state["txt_enc.bert_model.embeddings.word_embeddings.weight"]
        state["txt_enc.map.weight"], state["txt_enc.map.bias"] = torch.randn(embed, hidden), torch.randn(embed)
        box_mlp = [nn.Linear(feature_dim + 5, feature_dim), nn.Linear(feature_dim, feature_dim)]
        for index, layer in zip((0, 2), box_mlp, strict=True):
            state[f"img_enc.pos_encoding_image.map.{index}.weight"] = layer.weight.detach()
            state[f"img_enc.pos_encoding_image.map.{index}.bias"] = layer.bias.detach()
        state["img_enc.fc.weight"], state["img_enc.fc.bias"] = torch.randn(embed, feature_dim), torch.randn(embed)
        state["img_proj.weight"], state["img_proj.bias"] = torch.randn(embed, feature_dim) * 0.3, torch.zeros(embed)
        state["cap_proj.weight"], state["cap_proj.bias"] = torch.randn(embed, hidden) * 0.3, torch.zeros(embed)
        for prefix, width in (("img_enc.transformer_encoder", feature_dim), ("transformer_encoder_1", embed)):
            for n in range(2):
                layer = nn.TransformerEncoderLayer(width, 4, dim_feedforward=2 * width)
                state.update({f"{prefix}.layers.{n}.{k}": v for k, v in layer.state_dict().items()})
        path = tmp_path_factory.mktemp("authors-checkpoint") / f"model_best_{feature_dim}.pth"
        torch.save(
            {
                "model": {"img_txt_enc." + k: v for k, v in state.items()},
                "optimizer": {},
                "scheduler": None,
                "epoch": 29,
                "config": {"model": {"name": "teran"}},
                "opt": argparse.Namespace(batch_size=40),
            },
            path,
        )
        return path

    return make


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcesses:
    """Real `teran-es serve` processes: ``start(*args, env=None) -> base URL`` waits until
    /api/health answers (logs and an empty TMPDIR under ``directory``); ``stop(url)``."""

    def __init__(self, directory):
        self.directory = directory
        self.running: dict[str, tuple] = {}

    def log(self, url: str) -> str:
        return self.running[url][1].read_text() if url in self.running else ""

    def start(self, *args: str, env: dict | None = None, timeout: float = 180.0) -> str:
        import os
        import subprocess
        import sys
        import time
        import urllib.error
        import urllib.request

        port = free_port()
        tmp = self.directory / f"tmp-{port}"
        tmp.mkdir()
        log_path = self.directory / f"serve-{port}.log"
        environment = dict(os.environ, TMPDIR=str(tmp), **(env or {}))
        command = [
            sys.executable, "-c", "import sys; from teran_es.cli import main; sys.exit(main(sys.argv[1:]))",
            "serve", *args, "--port", str(port),
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        url = f"http://127.0.0.1:{port}"
        self.running[url] = (process, log_path, tmp)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"teran-es serve exited: {log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=5):
                    return url
            except urllib.error.HTTPError:
                return url  # it answers (503: the index cannot be reached)
            except OSError:
                time.sleep(0.5)
        self.stop(url)
        raise AssertionError(f"teran-es serve did not answer in {timeout} s: {log_path.read_text()[-3000:]}")

    def tmpdir(self, url: str):
        return self.running[url][2]

    def stop(self, url: str) -> None:
        import subprocess

        process = self.running.pop(url)[0]
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def serve_processes(tmp_path_factory):
    """A :class:`ServeProcesses`; whatever is still running at the end of the session is stopped."""
    processes = ServeProcesses(tmp_path_factory.mktemp("serve"))
    yield processes
    for url in list(processes.running):
        processes.stop(url)


# -- a tiny multi-source emoji collection and a random model for it --------------------------

EMOJI_COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30)}
EMOJI_SHAPES = ("square", "circle", "cross")
EMOJI_ARTISTS = ("openmoji", "fluent", "twemoji")  # twemoji: the held-out artist
EMOJI_SIZE = 16


def _emoji_drawing(colour, shape: str, seed: int):
    """A 32 x 32 drawing of a coloured shape, with noise of its own (no two drawings alike)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.full((32, 32, 3), 255, dtype=np.uint8)
    y, x = np.mgrid[:32, :32]
    half = 6 + seed % 5
    inside = {"square": (abs(x - 16) < half) & (abs(y - 16) < half),
              "circle": (x - 16) ** 2 + (y - 16) ** 2 < half**2,
              "cross": (abs(x - 16) < 3) | (abs(y - 16) < 3)}[shape]
    pixels[inside] = colour
    noise = rng.integers(-30, 30, pixels.shape)
    return Image.fromarray(np.clip(pixels.astype(int) + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="session")
def tiny_emoji(tmp_path_factory):
    """{"collection", "checkpoint", "rows"}: a multi-source emoji collection (emoji_multi.SCHEMA)
    of 9 concepts (colour x shape: 5 train, 2 val, 2 test) drawn by 3 artists, Twemoji held
    out, and a random tiny TERAN with a grid-CNN front end saved with data.format = "emoji"."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from teran_es.collections.emoji_multi import HELDOUT_SPLIT, SCHEMA
    from teran_es.config import load_config
    from teran_es.features.image_table import MANIFEST_NAME, TABLE_NAME
    from teran_es.features.tiny_text import make_tiny_text_backbone
    from teran_es.model.checkpoint import save_checkpoint
    from teran_es.model.teran import build_model

    root = tmp_path_factory.mktemp("tiny-emoji")
    collection = root / "collection"
    rows = []
    concepts = [(c, s) for c in EMOJI_COLOURS for s in EMOJI_SHAPES]
    splits = ["train"] * 5 + ["val", "test", "val", "test"]
    for a, artist in enumerate(EMOJI_ARTISTS):
        (collection / "images" / artist).mkdir(parents=True)
        for k, ((colour, shape), concept_split) in enumerate(zip(concepts, splits, strict=True)):
            code = f"C{k}"
            path = f"images/{artist}/{code}.png"
            _emoji_drawing(EMOJI_COLOURS[colour], shape, seed=10 * a + k).save(collection / path)
            rows.append({
                "image_id": f"{artist}-{code}", "split": HELDOUT_SPLIT if artist == "twemoji" else concept_split,
                "path": path, "captions": [f"a {colour} {shape}", f"{shape} , {colour}"], "code": code,
                "concept": code, "concept_split": concept_split, "source": artist, "artist": artist, "license": "test",
            })
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), collection / TABLE_NAME)
    (collection / MANIFEST_NAME).write_text(json.dumps({"collection": "emoji-multi", "counts": {"total": len(rows)}, "caption_sources": {}}))

    backbone = make_tiny_text_backbone(root / "text", ["a", ",", *EMOJI_COLOURS, *EMOJI_SHAPES])
    config = load_config(None, [
        "model.region_feature_dim=16", "model.visual_layers=1", "model.visual_heads=2", "model.visual_ff_dim=32",
        f"model.text_backbone={backbone}", "model.text_layers=2", "model.text_trainable_layers=0",
        "model.max_words=16", "model.embed_dim=16", "model.reasoning_layers=1", "model.reasoning_heads=2",
        "model.reasoning_ff_dim=32", "model.frontend=grid-cnn", "model.frontend_grid=2", "model.frontend_width=4",
        f"model.image_size={EMOJI_SIZE}", "data.format=emoji", f"data.path={collection}",
        "quantizer.gamma=8", "quantizer.doc_gamma=16", "quantizer.sample_size=500",
    ])
    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_model(config.model).eval(), root / "checkpoint", config)
    return {"collection": collection, "checkpoint": checkpoint, "rows": rows, "root": root}
