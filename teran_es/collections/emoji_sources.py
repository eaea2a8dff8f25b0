"""The sources of emoji descriptions, read as they ship.

* The Unicode CLDR English annotations: a spoken name ("tts") and ``|``-separated keywords
  per emoji, with sequences (skin tones, ZWJ families) in ``annotationsDerived``; flag names
  come from CLDR's territory and subdivision names. By default the subset that teran-es ships
  (``data/cldr-en-emoji.json``, CLDR 41 as Debian's ``unicode-cldr-core`` has it, with its
  Unicode licence beside it), so a collection's captions are the same on every machine
  whatever is installed; a CLDR ``common`` directory is read instead only when named
  (``cldr_dir``, or the environment variable ``TERAN_ES_CLDR_DIR``).
* The PyPI package ``emoji``: a name and aliases (GitHub/Slack short codes) per emoji.

Both are keyed by the emoji's text without variation selectors.
"""

from __future__ import annotations

import functools
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from teran_es.collections.emoji_codes import without_variation_selectors

# Where Debian's unicode-cldr-core puts the CLDR data (what the bundled subset was made from).
DEBIAN_CLDR_DIR = Path("/usr/share/unicode/cldr/common")
CLDR_DIR_ENV = "TERAN_ES_CLDR_DIR"  # a CLDR common directory to read instead of the bundled subset
BUNDLED_CLDR = Path(__file__).parent / "data" / "cldr-en-emoji.json"
BUNDLED_LABEL = "bundled with teran-es: teran_es/collections/data/cldr-en-emoji.json"


@dataclass(frozen=True)
class CldrAnnotations:
    """The English CLDR data we use, keyed by text without variation selectors."""

    tts: Mapping[str, str]
    keywords: Mapping[str, tuple[str, ...]]
    territories: Mapping[str, str]  # "IT" -> "Italy"
    subdivisions: Mapping[str, str]  # "gbsct" -> "Scotland"
    version: str
    path: str


def resolve_cldr_dir(cldr_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The CLDR ``common`` directory named by ``cldr_dir`` or ``TERAN_ES_CLDR_DIR`` when it has
    the English annotations; None otherwise (nothing named, or nothing there)."""
    named = cldr_dir or os.environ.get(CLDR_DIR_ENV)
    if not named:
        return None
    candidate = Path(named)
    return candidate if (candidate / "annotations" / "en.xml").is_file() else None


def _read_annotations(path: Path, tts: dict[str, str], keywords: dict[str, tuple[str, ...]]) -> None:
    for element in ET.parse(path).getroot().iter("annotation"):
        key = without_variation_selectors(element.get("cp", ""))
        text = (element.text or "").strip()
        if not key or not text or text == "↑↑↑":  # "↑↑↑" marks an inherited (empty) value
            continue
        if element.get("type") == "tts":
            tts.setdefault(key, text)
        else:
            keywords.setdefault(key, tuple(k.strip() for k in text.split("|") if k.strip()))


def _read_names(path: Path, tag: str) -> dict[str, str]:
    if not path.is_file():
        return {}
    names: dict[str, str] = {}
    for element in ET.parse(path).getroot().iter(tag):
        if element.get("alt") is None and element.text:
            names.setdefault(element.get("type", ""), element.text.strip())
    return names


def _read_cldr_version(common: Path) -> str:
    dtd = common / "dtd" / "ldml.dtd"
    if dtd.is_file():
        found = re.search(r'cldrVersion\s+CDATA\s+#FIXED\s+"([^"]+)"', dtd.read_text(encoding="utf-8"))
        if found:
            return found.group(1)
    return "unknown"


def load_cldr(cldr_dir: str | os.PathLike[str] | None = None) -> CldrAnnotations | None:
    """The English CLDR annotations and flag names: of the ``common`` directory named by
    ``cldr_dir`` or ``TERAN_ES_CLDR_DIR`` (None when it has none), else the bundled subset."""
    if cldr_dir or os.environ.get(CLDR_DIR_ENV):
        common = resolve_cldr_dir(cldr_dir)
        return None if common is None else _load_cldr_tree(common)
    return load_bundled_cldr()


@functools.lru_cache(maxsize=1)
def load_bundled_cldr(path: Path = BUNDLED_CLDR) -> CldrAnnotations:
    """The CLDR subset teran-es ships (written by :func:`cldr_subset`)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return CldrAnnotations(
        tts=data["tts"],
        keywords={key: tuple(words) for key, words in data["keywords"].items()},
        territories=data["territories"],
        subdivisions=data["subdivisions"],
        version=data["version"],
        path=BUNDLED_LABEL if path == BUNDLED_CLDR else str(path),
    )


def cldr_subset(cldr: CldrAnnotations, subdivisions: set[str]) -> dict:
    """What the bundled file holds: every annotation and territory name, and the names of
    ``subdivisions`` only (the few that have flags), as JSON-ready data."""
    return {
        "version": cldr.version,
        "source": "Unicode CLDR (https://cldr.unicode.org), common/annotations, annotationsDerived, "
        "main and subdivisions en.xml; Unicode License (cldr-en-emoji.LICENSE)",
        "tts": dict(sorted(cldr.tts.items())),
        "keywords": {key: list(words) for key, words in sorted(cldr.keywords.items())},
        "territories": dict(sorted(cldr.territories.items())),
        "subdivisions": {key: name for key, name in sorted(cldr.subdivisions.items()) if key in subdivisions},
    }


@functools.lru_cache(maxsize=4)  # the files are installed data; parsing them takes ~0.5 s
def _load_cldr_tree(common: Path) -> CldrAnnotations:
    tts: dict[str, str] = {}
    keywords: dict[str, tuple[str, ...]] = {}
    # The hand-curated file wins over the derived one where both speak of a sequence.
    for sub in ("annotations", "annotationsDerived"):
        path = common / sub / "en.xml"
        if path.is_file():
            _read_annotations(path, tts, keywords)
    return CldrAnnotations(
        tts=tts,
        keywords=keywords,
        territories=_read_names(common / "main" / "en.xml", "territory"),
        subdivisions=_read_names(common / "subdivisions" / "en.xml", "subdivision"),
        version=_read_cldr_version(common),
        path=str(common),
    )


@dataclass(frozen=True)
class EmojiPackageEntry:
    """What the ``emoji`` package says about one emoji."""

    text: str  # its fully-qualified string
    name: str
    aliases: tuple[str, ...]


@functools.lru_cache(maxsize=1)
def load_emoji_package() -> Mapping[str, EmojiPackageEntry]:
    """The ``emoji`` package's English names, keyed by text without variation selectors."""
    import emoji

    entries: dict[str, EmojiPackageEntry] = {}
    for text, data in emoji.EMOJI_DATA.items():
        key = without_variation_selectors(text)
        entry = EmojiPackageEntry(text=text, name=data.get("en", ""), aliases=tuple(data.get("alias", ())))
        # Prefer the fully-qualified spelling (the one with U+FE0F) when both exist.
        if key not in entries or "\ufe0f" in text:
            entries[key] = entry
    return entries


def emoji_package_version() -> str:
    """The installed ``emoji`` package's version, for the manifest."""
    import emoji

    return getattr(emoji, "__version__", "unknown")
