"""Captions of emoji from Unicode names, the emoji package and CLDR."""

from __future__ import annotations

from pathlib import Path

import pytest

from teran_es.collections.emoji_text import (
    MAX_CAPTIONS,
    EmojiDescriber,
    build_captions,
    caption_key,
    code_to_text,
    is_private_use,
    load_cldr,
    load_emoji_package,
    normalise_name,
    regional_flag_letters,
    split_group,
    subdivision_flag_code,
    text_to_code,
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


def test_code_round_trip():
    assert code_to_text("1F600") == "😀"
    assert text_to_code("👨\u200d👩") == "1F468-200D-1F469"
    assert text_to_code(code_to_text("0023-FE0F-20E3")) == "0023-FE0F-20E3"


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


def test_flag_and_group_helpers():
    assert regional_flag_letters(code_to_text("1F1EE-1F1F9")) == "IT"
    assert regional_flag_letters("😀") is None
    assert subdivision_flag_code(code_to_text("1F3F4-E0067-E0062-E0073-E0063-E0074-E007F")) == "gbsct"
    assert split_group("1F44B-1F3FD") == "1F44B"
    assert split_group("26F9-1F3FB-200D-2640-FE0F") == split_group("26F9-FE0F-200D-2640-FE0F")
    assert is_private_use("E000") and not is_private_use("1F600")


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


def test_installed_cldr_adds_keywords_and_subdivisions(describer: EmojiDescriber):
    if describer.cldr is None:
        pytest.skip("CLDR annotations are not installed (Debian package unicode-cldr-core)")
    assert "face, grin" in captions(describer, "1F600")
    assert captions(describer, "1F3F4-E0063-E0061-E006F-E006E-E007F")[0] == "flag of ontario"
    assert "cldr" in describer.sources()


def write_fake_cldr(root: Path) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "en.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?><ldml><annotations>'
        '<annotation cp="😀">face | grin | grinning face</annotation>'
        '<annotation cp="😀" type="tts">grinning face</annotation>'
        '<annotation cp="❤">heart | red heart</annotation>'
        '<annotation cp="❤" type="tts">red heart</annotation>'
        "</annotations></ldml>",
        encoding="utf-8",
    )
    (root / "main").mkdir()
    (root / "main" / "en.xml").write_text(
        '<ldml><localeDisplayNames><territories><territory type="IT">Italy</territory>'
        '<territory type="IT" alt="short">IT</territory></territories></localeDisplayNames></ldml>',
        encoding="utf-8",
    )
    (root / "subdivisions").mkdir()
    (root / "subdivisions" / "en.xml").write_text(
        '<ldml><localeDisplayNames><subdivisions><subdivision type="caon">Ontario</subdivision>'
        "</subdivisions></localeDisplayNames></ldml>",
        encoding="utf-8",
    )
    (root / "dtd").mkdir()
    (root / "dtd" / "ldml.dtd").write_text(
        '<!ATTLIST version cldrVersion CDATA #FIXED "99" >\n', encoding="utf-8"
    )
    return root


def test_cldr_reader_on_a_small_tree(tmp_path: Path):
    cldr = load_cldr(write_fake_cldr(tmp_path / "common"))
    assert cldr is not None
    assert cldr.version == "99"
    assert cldr.tts["😀"] == "grinning face"
    assert cldr.keywords["❤"] == ("heart", "red heart")  # looked up without U+FE0F
    assert cldr.territories == {"IT": "Italy"}
    assert cldr.subdivisions == {"caon": "Ontario"}
    describer = EmojiDescriber(cldr, {})
    assert captions(describer, "2764-FE0F")[:2] == ["red heart", "heavy black heart"]
    assert captions(describer, "1F3F4-E0063-E0061-E006F-E006E-E007F") == [
        "flag of ontario",
        "a flag of ontario",
    ]
    assert load_cldr(tmp_path / "missing") is None
