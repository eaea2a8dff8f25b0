"""A seeded synthetic image-caption dataset whose captions describe the regions.

The world has colours and objects. Each colour and each object has a random prototype
vector; a "red dog" region is the red prototype plus the dog prototype plus noise, in a
random box. An image holds two or three distinct (colour, object) concepts, one or two
regions each, plus a few pure-noise background regions. Its five captions name all of
its concepts, in shuffled order, through varied templates ("a photo of a red dog and a
blue car"). A caption therefore matches its image through words that each point at
regions: the TERAN setting in miniature, learnable by a tiny model in a minute or two.

The dataset is written in the columnar format (``synthetic.parquet``), with a tiny
random BERT whose vocabulary covers every caption word (``text-backbone/``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from teran_es.features.columnar import ColumnarWriter
from teran_es.features.records import ImageRecord

COLOURS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "brown", "pink")
OBJECTS = ("dog", "cat", "car", "tree", "house", "boat", "bird", "horse", "chair", "table", "ball", "bike")
TEMPLATES = (
    "a photo of {items}",
    "{items}",
    "there is {items}",
    "a picture with {items}",
    "{items} in the scene",
    "an image showing {items}",
    "we can see {items} here",
)
CAPTIONS_PER_IMAGE = 5
DATA_FILE = "synthetic.parquet"
TEXT_BACKBONE_DIR = "text-backbone"


def synthetic_vocabulary() -> list[str]:
    """Every word a synthetic caption can contain."""
    words: list[str] = ["a", "an", "and", ","]
    for template in TEMPLATES:
        words.extend(w for w in template.replace("{items}", " ").split() if w)
    words.extend(COLOURS)
    words.extend(OBJECTS)
    return list(dict.fromkeys(words))


@dataclass
class SyntheticWorld:
    """The prototypes every split shares: ``colour_vectors`` [C, F], ``object_vectors`` [O, F]."""

    colour_vectors: np.ndarray
    object_vectors: np.ndarray
    noise: float

    @classmethod
    def make(cls, feature_dim: int, seed: int, noise: float = 0.35) -> SyntheticWorld:
        rng = np.random.default_rng([seed, 0])
        return cls(
            colour_vectors=rng.standard_normal((len(COLOURS), feature_dim)).astype(np.float32),
            object_vectors=rng.standard_normal((len(OBJECTS), feature_dim)).astype(np.float32),
            noise=noise,
        )

    @property
    def feature_dim(self) -> int:
        return int(self.colour_vectors.shape[1])


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _caption(concepts: list[tuple[int, int]], rng: np.random.Generator) -> str:
    order = rng.permutation(len(concepts))
    phrases = [f"{_article(COLOURS[c])} {COLOURS[c]} {OBJECTS[o]}" for c, o in (concepts[i] for i in order)]
    items = phrases[0] if len(phrases) == 1 else " , ".join(phrases[:-1]) + " and " + phrases[-1]
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return template.format(items=items)


def _image(world: SyntheticWorld, image_id: str, split: str, rng: np.random.Generator) -> ImageRecord:
    n_concepts = int(rng.integers(2, 4))
    cells = rng.choice(len(COLOURS) * len(OBJECTS), size=n_concepts, replace=False)
    concepts = [(int(cell) // len(OBJECTS), int(cell) % len(OBJECTS)) for cell in cells]
    vectors = []
    for colour, obj in concepts:
        for _ in range(int(rng.integers(1, 3))):
            vectors.append(world.colour_vectors[colour] + world.object_vectors[obj])
    n_background = int(rng.integers(1, 4))
    # background regions are noise around the origin, so they resemble no concept
    vectors.extend(np.zeros(world.feature_dim, dtype=np.float32) for _ in range(n_background))
    features = np.stack(vectors) + world.noise * rng.standard_normal((len(vectors), world.feature_dim))
    order = rng.permutation(len(vectors))
    corner = rng.uniform(0.0, 0.7, size=(len(vectors), 2))
    size = rng.uniform(0.1, 0.3, size=(len(vectors), 2))
    boxes = np.concatenate([corner, np.minimum(corner + size, 1.0)], axis=1)
    captions = [_caption(concepts, rng) for _ in range(CAPTIONS_PER_IMAGE)]
    return ImageRecord(
        image_id=image_id,
        features=features[order].astype(np.float32),
        boxes=boxes[order].astype(np.float32),
        captions=captions,
        split=split,
    )


def synthetic_records(
    counts: dict[str, int], feature_dim: int = 32, seed: int = 0, noise: float = 0.35
) -> Iterator[ImageRecord]:
    """Yield ``counts[split]`` images per split, split after split; same seed, same data."""
    world = SyntheticWorld.make(feature_dim, seed, noise)
    for split_number, (split, count) in enumerate(counts.items()):
        rng = np.random.default_rng([seed, 1, split_number])
        for index in range(count):
            yield _image(world, f"{split}-{index:06d}", split, rng)


@dataclass
class SyntheticDataset:
    data_path: Path
    text_backbone: Path | None
    counts: dict[str, int]


def make_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    *,
    train_images: int = 2000,
    val_images: int = 200,
    test_images: int = 200,
    feature_dim: int = 32,
    seed: int = 0,
    noise: float = 0.35,
    text_backbone: bool = True,
    text_hidden_size: int = 32,
) -> SyntheticDataset:
    """Write ``out_dir/synthetic.parquet`` (and ``out_dir/text-backbone/``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"train": train_images, "val": val_images, "test": test_images}
    counts = {split: n for split, n in counts.items() if n > 0}
    with ColumnarWriter(out / DATA_FILE, row_group_size=256) as writer:
        writer.write_all(synthetic_records(counts, feature_dim=feature_dim, seed=seed, noise=noise))
    backbone = None
    if text_backbone:
        from teran_es.features.tiny_text import make_tiny_text_backbone

        backbone = make_tiny_text_backbone(
            out / TEXT_BACKBONE_DIR, synthetic_vocabulary(), hidden_size=text_hidden_size, seed=seed
        )
    return SyntheticDataset(out / DATA_FILE, backbone, counts)


def tiny_model_overrides(text_backbone: str | os.PathLike[str], feature_dim: int = 32) -> list[str]:
    """``section.field=value`` settings of a tiny TERAN for the synthetic data (tests, demo,
    benchmarks): one visual and one reasoning layer, 32-d everything, the tiny text backbone."""
    return [
        f"model.region_feature_dim={feature_dim}",
        "model.visual_layers=1",
        "model.visual_heads=2",
        "model.visual_ff_dim=64",
        f"model.text_backbone={text_backbone}",
        "model.text_layers=2",
        "model.max_words=32",
        "model.embed_dim=32",
        "model.reasoning_layers=1",
        "model.reasoning_heads=2",
        "model.reasoning_ff_dim=64",
    ]
