"""Code point sequences: spelling them, grouping skin tones, recognising flags and extras."""

from __future__ import annotations

from teran_es.collections.emoji_codes import (
    code_to_text,
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
