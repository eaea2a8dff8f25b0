"""Code point sequences: spelling them, grouping skin tones, recognising flags and extras,
and the kind of each."""

from __future__ import annotations

import pytest

from teran_es.collections.emoji_codes import (
    CONCEPT_KINDS,
    code_to_text,
    concept_kind,
    is_private_use,
    regional_flag_letters,
    split_group,
    subdivision_flag_code,
    text_to_code,
)


def test_code_round_trip():
    assert code_to_text("1F600") == "😀"
    assert text_to_code("👨\u200d👩") == "1F468-200D-1F469"
    assert text_to_code(code_to_text("0023-FE0F-20E3")) == "0023-FE0F-20E3"


def test_flag_and_group_helpers():
    assert regional_flag_letters(code_to_text("1F1EE-1F1F9")) == "IT"
    assert regional_flag_letters("😀") is None
    assert subdivision_flag_code(code_to_text("1F3F4-E0067-E0062-E0073-E0063-E0074-E007F")) == "gbsct"
    assert split_group("1F44B-1F3FD") == "1F44B"
    assert split_group("26F9-1F3FB-200D-2640-FE0F") == split_group("26F9-FE0F-200D-2640-FE0F")
    assert is_private_use("E000") and not is_private_use("1F600")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("1F1EE-1F1F9", "flag"),  # Italy
        ("1F3F4-E0067-E0062-E0073-E0063-E0074-E007F", "flag"),  # Scotland
        ("1F3F4", "single"),  # a black flag alone
        ("1F3F4-200D-2620-FE0F", "sequence"),  # pirate flag: ZWJ, not a country's
        ("1F3F3-FE0F-200D-1F308", "sequence"),  # rainbow flag
        ("0023-FE0F-20E3", "keycap"),
        ("1F44B-1F3FD", "skin tone"),
        ("26F9-1F3FB-200D-2640-FE0F", "skin tone"),
        ("1F468-200D-1F469", "sequence"),
        ("2764-FE0F", "single"),  # a variation selector does not make a sequence
        ("1F600", "single"),
        ("1F1EE", "single"),  # one regional indicator
    ],
)
def test_concept_kind(code, kind):
    assert kind in CONCEPT_KINDS and concept_kind(code) == kind


def test_concept_kind_refuses_what_is_not_a_sequence():
    with pytest.raises(ValueError):
        concept_kind("FE0F")
    with pytest.raises(ValueError):
        concept_kind("heart")
