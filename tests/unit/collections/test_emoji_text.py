"""Captions of emoji from Unicode names, the emoji package and CLDR."""

from __future__ import annotations

from pathlib import Path

import pytest

from teran_es.collections.emoji_sources import load_cldr, load_emoji_package
from teran_es.collections.emoji_text import (
    MAX_CAPTIONS,
    EmojiDescriber,
    build_captions,
    caption_key,
    normalise_name,
    with_article,
)


@pytest.fixture(scope="module")
def describer() -> EmojiDescriber:
    return EmojiDescriber.from_installed()


@pytest.fixture(scope="module")
def describer_without_cldr() -> EmojiDescriber:
    return EmojiDescriber(None, load_emoji_package())


def captions(describer: EmojiDescriber, code: str) -> list[str]:
    description = describer.describe(code)
    assert description is not None, code
    return build_captions(description)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (":grinning_face:", "grinning face"),
        ("flag: Italy", "flag of italy"),
        ("keycap: #", "keycap #"),
        ("waving hand: medium skin tone", "waving hand, medium skin tone"),
        (":Côte_d’Ivoire:", "côte d'ivoire"),
        ("GRINNING FACE", "grinning face"),
        ("  two   words ", "two words"),
    ],
)
def test_normalise_name(raw: str, expected: str):
    assert normalise_name(raw) == expected


def test_caption_key_ignores_punctuation_and_spacing():
    assert caption_key("waving hand, medium skin tone") == caption_key("waving hand medium skin tone")
    assert caption_key("red heart") != caption_key("heart")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("grinning face", "a grinning face"),
        ("eagle", "an eagle"),
        ("dress", "a dress"),
        ("sparkles", None),
        ("people hugging", None),
        ("raising hands, medium skin tone", None),
        ("1st place medal", None),
    ],
)
def test_with_article(name: str, expected: str | None):
    assert with_article(name) == expected


@pytest.mark.parametrize("which", ["describer", "describer_without_cldr"])
def test_grinning_face(which: str, request: pytest.FixtureRequest):
    found = captions(request.getfixturevalue(which), "1F600")
    assert found[0] == "grinning face"
    assert "a grinning face" in found
    assert 1 <= len(found) <= MAX_CAPTIONS
    assert len({caption_key(c) for c in found}) == len(found)


@pytest.mark.parametrize("which", ["describer", "describer_without_cldr"])
def test_flag_of_italy(which: str, request: pytest.FixtureRequest):
    found = captions(request.getfixturevalue(which), "1F1EE-1F1F9")
    assert found[0] == "flag of italy"
    assert "italy" in found
    assert "flag" not in found  # a caption every flag would share


def test_zwj_family(describer: EmojiDescriber):
    found = captions(describer, "1F468-200D-1F469-200D-1F467")
    words = set(" ".join(found).replace(",", " ").split())
    assert {"family", "man", "woman", "girl"} <= words


def test_skin_tone_variant_names_its_tone(describer: EmojiDescriber):
    found = captions(describer, "1F44B-1F3FD")
    assert found[0].startswith("waving hand")
    assert "medium skin tone" in found[0]
    assert "waving hand" in found  # what the base emoji is called
    assert describer.describe("1F3FB") is not None  # a lone skin-tone swatch is its own base


def test_unicode_name_alone_describes_a_symbol(describer: EmojiDescriber):
    assert captions(describer, "2654")[0] == "white chess king"


def test_undescribed_sequences(describer: EmojiDescriber):
    # an OpenMoji extra: a white flag joined to a large blue square; no source names it
    assert describer.describe("1F3F3-FE0F-200D-1F7E6") is None
    no_sources = EmojiDescriber(None, {}, use_unicode_names=False)
    assert no_sources.describe("1F600") is None


def test_bundled_cldr_adds_keywords_and_subdivisions(describer: EmojiDescriber):
    # the default describer reads the CLDR subset shipped with teran-es, on every machine
    assert describer.cldr is not None and describer.cldr.version == "41"
    assert "face, grin" in captions(describer, "1F600")
    assert captions(describer, "1F3F4-E0063-E0061-E006F-E006E-E007F")[0] == "flag of ontario"
    assert "cldr" in describer.sources()


def test_captions_from_a_small_cldr_tree(fake_cldr: Path):
    cldr = load_cldr(fake_cldr)
    describer = EmojiDescriber(cldr, {})
    assert captions(describer, "2764-FE0F")[:2] == ["red heart", "heavy black heart"]
    assert captions(describer, "1F3F4-E0063-E0061-E006F-E006E-E007F") == [
        "flag of ontario",
        "a flag of ontario",
    ]
