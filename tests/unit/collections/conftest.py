"""Fixtures of the collections' tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def fake_cldr(tmp_path: Path) -> Path:
    """A small CLDR ``common`` tree: two annotated emoji, Italy, Ontario, version 99."""
    return write_fake_cldr(tmp_path / "common")


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
