"""Reading the sources of emoji descriptions: CLDR (a small tree here) and the emoji package."""

from __future__ import annotations

from pathlib import Path

from teran_es.collections.emoji_sources import load_cldr, load_emoji_package


def test_cldr_reader_on_a_small_tree(fake_cldr: Path, tmp_path: Path):
    cldr = load_cldr(fake_cldr)
    assert cldr is not None
    assert cldr.version == "99"
    assert cldr.tts["😀"] == "grinning face"
    assert cldr.keywords["❤"] == ("heart", "red heart")  # looked up without U+FE0F
    assert cldr.territories == {"IT": "Italy"}
    assert cldr.subdivisions == {"caon": "Ontario"}
    assert load_cldr(tmp_path / "missing") is None


def test_emoji_package_entries_are_keyed_without_variation_selectors():
    entries = load_emoji_package()
    assert entries["\u2764"].text == "\u2764\ufe0f"  # the fully-qualified spelling wins
    assert entries["😀"].name


def test_the_bundled_cldr_is_the_default_and_a_named_directory_replaces_it(fake_cldr: Path, monkeypatch):
    from teran_es.collections.emoji_sources import BUNDLED_LABEL, CLDR_DIR_ENV

    monkeypatch.delenv(CLDR_DIR_ENV, raising=False)
    bundled = load_cldr()
    assert bundled is not None and bundled.path == BUNDLED_LABEL and bundled.version == "41"
    assert "rooster" in bundled.tts["🐓"] and bundled.territories["IT"] == "Italy"
    assert bundled.subdivisions["gbsct"] == "Scotland"
    monkeypatch.setenv(CLDR_DIR_ENV, str(fake_cldr))
    assert load_cldr().version == "99"  # the named tree, not the bundled subset


def test_the_bundled_subset_round_trips(fake_cldr: Path, tmp_path: Path):
    import json

    from teran_es.collections.emoji_sources import cldr_subset, load_bundled_cldr

    tree = load_cldr(fake_cldr)
    path = tmp_path / "subset.json"
    path.write_text(json.dumps(cldr_subset(tree, {"caon"})), encoding="utf-8")
    again = load_bundled_cldr(path)
    assert (again.tts, again.keywords, again.territories, again.subdivisions, again.version) == (
        tree.tts, tree.keywords, tree.territories, tree.subdivisions, tree.version
    )
    path.write_text(json.dumps(cldr_subset(tree, set())), encoding="utf-8")
    assert load_bundled_cldr.__wrapped__(path).subdivisions == {}  # only the flagged subdivisions are kept
