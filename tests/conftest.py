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
def tiny_openmoji_config():
    """Function ``(workdir, *overrides) -> PipelineConfig``: the tiny collection's pipeline with
    another work directory (and e.g. another backend)."""
    from pathlib import Path

    from teran_es.config import load_config

    pipeline = Path(__file__).resolve().parents[1] / "pipelines" / "openmoji.toml"

    def make(collection, workdir, *overrides: str):
        return load_config(pipeline, [*tiny_openmoji_overrides(collection, workdir), *overrides])

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
