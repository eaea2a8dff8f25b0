"""Emoji as code point sequences: spelling, grouping and the kinds of sequence.

OpenMoji names its drawings by the sequence in upper-case hex (``1F468-200D-1F469``); these
helpers turn such names into text and back, find the group of near-duplicate drawings a
sequence belongs to, and recognise flags and private-use extras. Standard library only.
"""

from __future__ import annotations

import unicodedata

VARIATION_SELECTORS = frozenset({0xFE0E, 0xFE0F})
SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))
ZWJ = 0x200D
REGIONAL_INDICATOR_A, REGIONAL_INDICATOR_Z = 0x1F1E6, 0x1F1FF
BLACK_FLAG = 0x1F3F4
TAG_A, TAG_Z, CANCEL_TAG = 0xE0061, 0xE007A, 0xE007F


def code_to_text(code: str) -> str:
    """``"1F468-200D-1F469"`` -> the character string."""
    return "".join(chr(int(part, 16)) for part in code.split("-"))


def text_to_code(text: str) -> str:
    """The character string -> ``"1F468-200D-1F469"`` (upper-case hex, at least 4 digits)."""
    return "-".join(f"{ord(ch):04X}" for ch in text)


def without_variation_selectors(text: str) -> str:
    """CLDR keys and our lookups ignore U+FE0E/U+FE0F (CLDR strips them from its keys)."""
    return "".join(ch for ch in text if ord(ch) not in VARIATION_SELECTORS)


def split_group(code: str) -> str:
    """The sequence with skin-tone modifiers and variation selectors removed.

    Skin-tone variants of one emoji are near-duplicate drawings; they share this key so
    that they land in the same split.
    """
    points = [int(part, 16) for part in code.split("-")]
    kept = [p for p in points if p not in SKIN_TONES and p not in VARIATION_SELECTORS]
    return "-".join(f"{p:04X}" for p in kept) or code


def has_skin_tone(code: str) -> bool:
    """Whether the sequence holds a skin-tone modifier (U+1F3FB..U+1F3FF)."""
    return any(int(part, 16) in SKIN_TONES for part in code.split("-"))


KEYCAP = 0x20E3
CONCEPT_KINDS = ("flag", "keycap", "skin tone", "sequence", "single")


def concept_kind(code: str) -> str:
    """What kind of emoji a sequence is, for reading results by kind (CONCEPT_KINDS, first
    match): a "flag" of a country or region (two regional indicators, or a black flag with
    tag characters; the pirate or rainbow flag is a "sequence"), a "keycap", a
    "skin tone" variant, another multi-point "sequence" (ZWJ and the like), else "single"."""
    points = [p for p in (int(part, 16) for part in code.split("-")) if p not in VARIATION_SELECTORS]
    if not points:
        raise ValueError(f"not a code point sequence: {code!r}")
    regional = len(points) == 2 and all(REGIONAL_INDICATOR_A <= p <= REGIONAL_INDICATOR_Z for p in points)
    tagged = points[0] == BLACK_FLAG and len(points) > 2 and all(TAG_A <= p <= CANCEL_TAG for p in points[1:])
    if regional or tagged:
        return "flag"
    if KEYCAP in points:
        return "keycap"
    if any(p in SKIN_TONES for p in points):
        return "skin tone"
    return "sequence" if len(points) > 1 else "single"


def is_private_use(code: str) -> bool:
    """OpenMoji's own extras live in the private use areas and have no Unicode meaning."""
    return any(unicodedata.category(ch) == "Co" for ch in code_to_text(code))


def regional_flag_letters(text: str) -> str | None:
    """``"🇮🇹"`` -> ``"IT"``; None when the text is not a pair of regional indicators."""
    points = [ord(ch) for ch in without_variation_selectors(text)]
    if len(points) == 2 and all(REGIONAL_INDICATOR_A <= p <= REGIONAL_INDICATOR_Z for p in points):
        return "".join(chr(ord("A") + p - REGIONAL_INDICATOR_A) for p in points)
    return None


def subdivision_flag_code(text: str) -> str | None:
    """A black flag followed by tag letters, e.g. ``"gbsct"``; None for anything else."""
    points = [ord(ch) for ch in text]
    if len(points) < 4 or points[0] != BLACK_FLAG or points[-1] != CANCEL_TAG:
        return None
    tags = points[1:-1]
    if not all(TAG_A <= p <= TAG_Z or 0xE0030 <= p <= 0xE0039 for p in tags):
        return None
    return "".join(chr(p - 0xE0000) for p in tags)
