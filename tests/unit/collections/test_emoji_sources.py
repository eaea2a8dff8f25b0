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
