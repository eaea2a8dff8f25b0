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
