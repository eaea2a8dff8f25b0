"""The multi-source emoji collection on small fake npm tarballs built here (no network):
layouts of the three packages, splits by concept, the held-out artist, attribution, and
sources or drawings that are skipped with their reason."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from teran_es.collections.emoji_multi import (
    HELDOUT_SPLIT,
    NO_NAME,
    PRIVATE_USE,
    build_emoji_collection,
    concept_of,
)
from teran_es.collections.npm_sources import FLUENT, NOTO, TWEMOJI, fluent_body, read_source
from teran_es.collections.openmoji import installed_source
from teran_es.collections.render import RENDER_FAILED

SIZE = 24
CIRCLE = '<circle cx="16" cy="16" r="12" fill="#e33"/>'
# grinning face, thumbs up, red heart, dog face, flag of Italy, cat face
CODES = ["1f600", "1f44d", "2764-fe0f", "1f436", "1f1ee-1f1f9", "1f431"]


def tarball(path: Path, files: dict[str, bytes]) -> Path:
    """An npm tarball: every file under package/."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def png_bytes(colour) -> bytes:
    out = io.BytesIO()
    pixels = np.zeros((64, 64, 4), dtype=np.uint8)
    pixels[16:48, 16:48] = (*colour, 255)
    Image.fromarray(pixels, "RGBA").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def npm_dir(tmp_path: Path) -> Path:
    root = tmp_path / "npm"
    root.mkdir()
    icons = {
        "width": 32,
        "height": 32,
        "icons": {
            "grinning-face": {"body": CIRCLE},
            "thumbs-up": {"body": '<path d="M4 4h24v24z" fill="#fc0"/>'},
            "dog-face": {"body": '<path d="M4 4h24v24z" fill="#a50"/'},  # truncated: does not render
            "two-grins": {"body": CIRCLE},
        },
        "aliases": {"cat-face": {"parent": "thumbs-up", "hFlip": True}},
    }
    chars = {"1f600": "grinning-face", "1f44d": "thumbs-up", "1f436": "dog-face", "1f431": "cat-face",
             "1f600-1f600": "two-grins", "e000": "grinning-face"}
    tarball(root / FLUENT.tarball_name, {"icons.json": json.dumps(icons).encode(),
                                         "chars.json": json.dumps(chars).encode(), "info.json": b"{}"})
    emoji_json = [
        {"unified": "1F600", "image": "1f600.png", "name": "GRINNING FACE", "has_img_google": True},
        {"unified": "1F44D", "image": "1f44d.png", "name": "THUMBS UP SIGN", "has_img_google": True,
         "skin_variations": {"1F3FB": {"unified": "1F44D-1F3FB", "image": "1f44d-1f3fb.png", "has_img_google": True}}},
        {"unified": "2764-FE0F", "image": "2764-fe0f.png", "name": "HEAVY BLACK HEART", "has_img_google": True},
        {"unified": "1F1EE-1F1F9", "image": "1f1ee-1f1f9.png", "name": "", "has_img_google": False},
    ]
    noto = {"emoji.json": json.dumps(emoji_json).encode()}
    for i, name in enumerate(["1f600.png", "1f44d.png", "1f44d-1f3fb.png", "2764-fe0f.png", "1f1ee-1f1f9.png"]):
        noto[f"img/google/64/{name}"] = png_bytes((40 * i, 200, 90))
    tarball(root / NOTO.tarball_name, noto)
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">{CIRCLE}</svg>'.encode()
    tarball(root / TWEMOJI.tarball_name, {f"{code.replace('-fe0f', '')}.svg": svg for code in CODES} | {"license": b"MIT"})
    return root


@pytest.fixture
def openmoji_svgs(tmp_path: Path) -> Path:
    real = installed_source().svg_dir
    svg_dir = tmp_path / "openmoji"
    svg_dir.mkdir()
    for code in ("1F600", "1F44D", "1F436", "1F1EE-1F1F9", "1F431", "2764"):
        shutil.copy(real / f"{code}.svg", svg_dir / f"{code}.svg")
    return svg_dir


def build(tmp_path, npm_dir, openmoji_svgs, **options):
    return build_emoji_collection(tmp_path / "cache", size=SIZE, npm_dir=npm_dir, openmoji_svg_dir=openmoji_svgs,
                                  progress=False, **options)


def test_fake_package_layouts_are_read(npm_dir: Path):
    fluent = {image.code: image for image in read_source(FLUENT, npm_dir / FLUENT.tarball_name)}
    assert set(fluent) == {"1F600", "1F44D", "1F436", "1F431", "1F600-1F600", "E000"}
    assert 'scale(-1 1)' in fluent["1F431"].svg and fluent["1F431"].own_name == "cat face"
    noto = [image.code for image in read_source(NOTO, npm_dir / NOTO.tarball_name)]
    assert noto == ["1F600", "1F44D", "1F44D-1F3FB", "2764-FE0F"]  # the flag has no Google image
    assert len(list(read_source(TWEMOJI, npm_dir / TWEMOJI.tarball_name))) == 6
    assert fluent_body({"icons": {}, "aliases": {"a": {"parent": "b"}}}, "a") is None


def test_collection_splits_by_concept_and_holds_one_artist_out(tmp_path, npm_dir, openmoji_svgs):
    directory = build(tmp_path, npm_dir, openmoji_svgs)
    rows = pq.read_table(directory / "collection.parquet").to_pylist()
    manifest = json.loads((directory / "manifest.json").read_text())
    by_source = manifest["counts"]["by_source"]
    assert by_source == {"fluent": 4, "noto": 4, "openmoji": 6, "twemoji": 6}
    assert all((directory / row["path"]).is_file() for row in rows)
    assert {Image.open(directory / row["path"]).size for row in rows} == {(SIZE, SIZE)}
    # one concept, one split, whoever drew it; the held-out artist is never trained on
    concept_splits = {}
    for row in rows:
        assert concept_splits.setdefault(row["concept"], row["concept_split"]) == row["concept_split"]
        if row["artist"].startswith("Twitter"):
            assert row["split"] == HELDOUT_SPLIT
        else:
            assert row["split"] == row["concept_split"]
    # the same captions for a concept whoever drew it (the captions do not name the artist)
    hearts = {row["image_id"]: row["captions"] for row in rows if row["concept"] == "2764"}
    assert len(hearts) == 3 and len({tuple(c) for c in hearts.values()}) == 1 and "red heart" in hearts["noto-2764-FE0F"]
    own = next(row for row in rows if row["code"] == "1F600-1F600")
    assert own["captions"][0] == "two grins"  # no caption source knows it: its package's name
    licences = {row["artist"]: row["license"] for row in rows}
    assert licences == {"OpenMoji": "CC BY-SA 4.0", "Microsoft (Fluent Emoji)": "MIT",
                        "Google (Noto Emoji)": "Apache-2.0", "Twitter (Twemoji)": "CC-BY 4.0"}
    assert "Twemoji graphics" in manifest["sources"]["twemoji"]["attribution"]
    assert manifest["caption_sources"]["cldr"].startswith("CLDR 41")
    skipped = {item["code"]: item["reason"] for item in manifest["skipped"]["fluent"]}
    assert skipped["1F436"].startswith(RENDER_FAILED) and skipped["E000"] == PRIVATE_USE
    assert build(tmp_path, npm_dir, openmoji_svgs) == directory  # up to date: not rebuilt


def test_an_unavailable_source_is_skipped_with_its_reason(tmp_path, npm_dir, openmoji_svgs, caplog):
    (npm_dir / NOTO.tarball_name).unlink()
    directory = build(tmp_path, npm_dir, openmoji_svgs, npm="no-such-npm-here")
    manifest = json.loads((directory / "manifest.json").read_text())
    assert "npm is not installed" in manifest["unavailable"]["noto"]
    assert "noto" not in manifest["counts"]["by_source"] and manifest["counts"]["by_source"]["fluent"] == 4
    assert "emoji source noto skipped" in caplog.text
    (npm_dir / "bad").mkdir()
    (npm_dir / "bad" / FLUENT.tarball_name).write_bytes(b"not a tarball")
    broken = build(tmp_path / "other", npm_dir / "bad", openmoji_svgs, sources=("openmoji", "fluent"), held_out="",
                   npm="no-such-npm-here")
    assert "not a readable npm tarball" in json.loads((broken / "manifest.json").read_text())["unavailable"]["fluent"]


def test_names_without_a_source_are_skipped(tmp_path, npm_dir, openmoji_svgs):
    from teran_es.collections.emoji_multi import _captions
    from teran_es.collections.emoji_text import EmojiDescriber
    from teran_es.collections.npm_sources import SourceImage

    describer = EmojiDescriber(None, {})
    assert _captions(describer, SourceImage("1F600-1F600")) is None
    assert NO_NAME.startswith("no description")
    assert concept_of("2764-FE0F") == "2764" and concept_of("1f44d-1f3fb") == "1F44D-1F3FB"
    with pytest.raises(ValueError, match="unknown emoji sources"):
        build(tmp_path, npm_dir, openmoji_svgs, sources=("openmoji", "apple"))


def test_the_emoji_data_format_reads_the_collection(tmp_path, npm_dir, openmoji_svgs, monkeypatch):
    from teran_es.collections.defaults import with_default_collection
    from teran_es.collections.emoji_multi import default_collection_dir
    from teran_es.config import DataConfig
    from teran_es.features import open_image_set

    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path / "cache"))
    assert with_default_collection(DataConfig(format="emoji")).path == str(default_collection_dir())
    directory = build(tmp_path, npm_dir, openmoji_svgs)
    held = open_image_set(DataConfig(format="emoji", path=str(directory)), HELDOUT_SPLIT, image_size=SIZE)
    assert len(held) == 6 and all(image_id.startswith("twemoji-") for image_id in held.image_ids)


def test_training_batches_of_the_emoji_format_carry_the_concept(tmp_path, npm_dir, openmoji_svgs):
    import torch

    from teran_es.config import DataConfig
    from teran_es.features import RecordError, open_image_set
    from teran_es.features.image_table import read_image_groups
    from teran_es.training_batches import caption_pairs, collate, group_indices

    directory = build(tmp_path, npm_dir, openmoji_svgs)
    concept_of_id = {row["image_id"]: row["concept"] for row in pq.read_table(directory / "collection.parquet").to_pylist()}
    assert read_image_groups(directory, "concept") == concept_of_id
    shared = 0
    for split in ("train", "val", "test", HELDOUT_SPLIT):
        try:
            images = open_image_set(DataConfig(format="emoji", path=str(directory)), split, image_size=SIZE)
        except RecordError:  # a split this small collection leaves empty
            continue
        groups = group_indices(images.image_ids, read_image_groups(directory, "concept"))
        pairs = caption_pairs(images)
        batch = collate(images, pairs, lambda captions: {"input_ids": torch.zeros(len(captions), 2)}, SIZE,
                        groups=groups)
        concepts = [concept_of_id[images.image_ids[int(i)]] for i in pairs[:, 0]]
        got = batch["group_index"].tolist()
        for a in range(len(pairs)):
            for b in range(len(pairs)):
                assert (got[a] == got[b]) == (concepts[a] == concepts[b])
        shared += len(set(concepts)) < len(set(images.image_ids[int(i)] for i in pairs[:, 0]))
    assert shared  # some split holds one concept drawn by several artists
    with pytest.raises(KeyError, match="has no group"):
        group_indices(["no-such-image"], concept_of_id)
