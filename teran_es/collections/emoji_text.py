"""Descriptions of emoji from sources no one here wrote, turned into short captions.

Three sources, read as they ship:

* Unicode character names (``unicodedata``), for single code points;
* the PyPI package ``emoji``: a name and aliases (GitHub/Slack short codes) per emoji;
* the Unicode CLDR English annotations (Debian's ``unicode-cldr-core``): a spoken name
  ("tts") and ``|``-separated keywords per emoji, with sequences (skin tones, ZWJ
  families) in ``annotationsDerived``; flag names come from CLDR's territory and
  subdivision names.

CLDR is optional: without it the captions come from the other two sources, and the
manifest of a collection says which sources were used.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# Where Debian's unicode-cldr-core puts the CLDR data; TERAN_ES_CLDR_DIR overrides it.
DEBIAN_CLDR_DIR = Path("/usr/share/unicode/cldr/common")
CLDR_DIR_ENV = "TERAN_ES_CLDR_DIR"

MAX_CAPTIONS = 5
MAX_KEYWORDS_PER_CAPTION = 6
MIN_ALIAS_CHARS = 3  # shorter aliases are country codes or symbols (":it:", ":+1:"), not words

VARIATION_SELECTORS = frozenset({0xFE0E, 0xFE0F})
SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))
ZWJ = 0x200D
REGIONAL_INDICATOR_A, REGIONAL_INDICATOR_Z = 0x1F1E6, 0x1F1FF
BLACK_FLAG = 0x1F3F4
TAG_A, TAG_Z, CANCEL_TAG = 0xE0061, 0xE007A, 0xE007F

# Words that make an article form ("a dog face") ungrammatical when they start or end a name.
_PLURAL_WORDS = frozenset({"people", "men", "women", "children", "feet", "teeth", "mice", "geese"})
_SINGULAR_S_ENDINGS = ("ss", "us", "is", "ous")


# --- code point sequences -------------------------------------------------------------


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


def _has_skin_tone(code: str) -> bool:
    return any(int(part, 16) in SKIN_TONES for part in code.split("-"))


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


# --- text normalisation -----------------------------------------------------------------

_SPACES = re.compile(r"\s+")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})


def normalise_name(raw: str) -> str:
    """One spelling for names from every source.

    Lower case; short-code colons and underscores removed (``":grinning_face:"`` ->
    ``"grinning face"``); CLDR's ``"flag: Italy"`` -> ``"flag of italy"``, ``"keycap: #"``
    -> ``"keycap #"`` and other ``"name: detail"`` -> ``"name, detail"``.
    """
    text = unicodedata.normalize("NFC", raw).translate(_QUOTES).strip()
    if len(text) > 2 and text.startswith(":") and text.endswith(":"):
        text = text[1:-1]
    text = text.replace("_", " ")
    head, sep, tail = text.partition(": ")
    if sep:
        joiner = {"flag": " of ", "keycap": " "}.get(head.strip().lower(), ", ")
        text = head.strip() + joiner + tail.strip()
    text = text.replace(":", " ")
    return _SPACES.sub(" ", text).strip().lower()


def caption_key(caption: str) -> str:
    """Captions that differ only in punctuation or spacing count as the same caption."""
    return " ".join(re.findall(r"\w+|[^\w\s]", caption.lower().replace(",", " ")))


def with_article(name: str) -> str | None:
    """``"grinning face"`` -> ``"a grinning face"``; None when an article would read wrong."""
    words = name.split()
    if not words or words[0] in {"a", "an", "the"} or not words[0][0].isalpha():
        return None
    head = name.split(",")[0].split()  # "raising hands, medium skin tone": the noun is "hands"
    for word in (words[0], head[-1]):
        if word in _PLURAL_WORDS or (word.endswith("s") and not word.endswith(_SINGULAR_S_ENDINGS)):
            return None
    article = "an" if words[0][0] in "aeiou" else "a"
    return f"{article} {name}"


# --- sources ---------------------------------------------------------------------------


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
    """The CLDR ``common`` directory to read, or None when there is none."""
    candidate = Path(cldr_dir) if cldr_dir else Path(os.environ.get(CLDR_DIR_ENV) or DEBIAN_CLDR_DIR)
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
    """Read the English CLDR annotations and flag names; None when CLDR is not installed."""
    common = resolve_cldr_dir(cldr_dir)
    return None if common is None else _load_cldr_tree(common)


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
    import emoji

    return getattr(emoji, "__version__", "unknown")


# --- descriptions and captions ---------------------------------------------------------


@dataclass(frozen=True)
class Description:
    """Everything the sources say about one code point sequence, already normalised."""

    code: str
    text: str  # the character string (fully qualified where the emoji package knows it)
    names: tuple[str, ...]  # best first
    keywords: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    sources: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.names[0]


class EmojiDescriber:
    """Looks a code point sequence up in every source it was given."""

    def __init__(
        self,
        cldr: CldrAnnotations | None,
        emoji_entries: Mapping[str, EmojiPackageEntry],
        use_unicode_names: bool = True,
    ) -> None:
        self.cldr = cldr
        self.emoji_entries = emoji_entries
        self.use_unicode_names = use_unicode_names

    @classmethod
    def from_installed(cls, cldr_dir: str | os.PathLike[str] | None = None) -> EmojiDescriber:
        cldr = load_cldr(cldr_dir)
        if cldr is None:
            log.warning(
                "CLDR annotations not found (install Debian's unicode-cldr-core or set %s); "
                "captions come from unicodedata and the emoji package only",
                CLDR_DIR_ENV,
            )
        return cls(cldr, load_emoji_package())

    def sources(self) -> dict[str, str]:
        """Names and versions of the sources, for the manifest."""
        used = {
            "unicodedata": f"Unicode {unicodedata.unidata_version} (Python standard library)",
            "emoji": f"emoji {emoji_package_version()} (PyPI)",
        }
        if self.cldr is not None:
            used["cldr"] = f"CLDR {self.cldr.version} English annotations ({self.cldr.path})"
        return used

    def describe(self, code: str) -> Description | None:
        """What the sources say about ``code``; None when none of them knows it."""
        text = code_to_text(code)
        key = without_variation_selectors(text)
        names: list[str] = []
        keywords: tuple[str, ...] = ()
        aliases: list[str] = []
        sources: list[str] = []

        is_flag = regional_flag_letters(text) is not None or subdivision_flag_code(text) is not None
        flag_place = self._flag_place(text) if is_flag else None
        if self.cldr is not None:
            if key in self.cldr.tts:
                names.append(normalise_name(self.cldr.tts[key]))
                sources.append("cldr")
            keywords = tuple(normalise_name(k) for k in self.cldr.keywords.get(key, ()))
            if keywords and "cldr" not in sources:
                sources.append("cldr")
        if flag_place:
            names.append(f"flag of {flag_place}")

        entry = self.emoji_entries.get(key)
        if entry is not None:
            emoji_name = normalise_name(entry.name)
            if is_flag and not emoji_name.startswith("flag"):
                names.append(f"flag of {emoji_name}")  # the package names flags by place only
            names.append(emoji_name)
            aliases = [normalise_name(a) for a in entry.aliases]
            sources.append("emoji")
            text = entry.text

        if self.use_unicode_names and len(key) == 1:
            unicode_name = unicodedata.name(key, "")
            if unicode_name:
                names.append(normalise_name(unicode_name))
                sources.append("unicodedata")

        names = [n for n in _distinct(names) if n]
        if not names:
            return None
        base_code = split_group(code)
        if _has_skin_tone(code) and base_code != code:  # a lone skin-tone swatch is its own base
            # A skin-tone variant is also what its base is called: people search for
            # "waving hand", not "waving hand, medium skin tone".
            base = self.describe(base_code)
            if base is not None:
                names = _distinct([*names, base.name])
        aliases = [a for a in aliases if len(a) >= MIN_ALIAS_CHARS and any(c.isalpha() for c in a)]
        return Description(
            code=code,
            text=text,
            names=tuple(names),
            keywords=keywords,
            aliases=tuple(_distinct(aliases)),
            sources=tuple(dict.fromkeys(sources)),
        )

    def _flag_place(self, text: str) -> str | None:
        """The place a flag stands for, from CLDR's territory or subdivision names."""
        if self.cldr is None:
            return None
        letters = regional_flag_letters(text)
        if letters is not None:
            place = self.cldr.territories.get(letters)
            return normalise_name(place) if place else None
        subdivision = subdivision_flag_code(text)
        if subdivision is not None:
            place = self.cldr.subdivisions.get(subdivision)
            return normalise_name(place) if place else None
        return None


def build_captions(description: Description, max_captions: int = MAX_CAPTIONS) -> list[str]:
    """Up to ``max_captions`` short, distinct captions, the most telling first.

    Order: the main name; the keywords as a list ("face, grin, happy"); the other names
    (emoji package, Unicode); the aliases; the main name with an article ("a dog face").
    """
    candidates: list[str] = [description.name]
    keyword_caption = _keyword_caption(description)
    if keyword_caption:
        candidates.append(keyword_caption)
    candidates.extend(description.names[1:])
    candidates.extend(description.aliases)
    article_form = with_article(description.name)
    if article_form:
        candidates.append(article_form)
    return _distinct(candidates)[:max_captions]


def _keyword_caption(description: Description) -> str:
    """The keywords as a list, or "" when they add no word to the main name.

    ("flag" for "flag of italy" would be one caption shared by every flag; "family, girl,
    man, woman" only reorders "family, man, woman, girl".)
    """
    name_keys = {caption_key(n) for n in description.names}
    kept = [
        k for k in description.keywords if any(c.isalnum() for c in k) and caption_key(k) not in name_keys
    ][:MAX_KEYWORDS_PER_CAPTION]
    if set(_words(", ".join(kept))) <= set(_words(description.name)):
        return ""
    return ", ".join(kept)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _distinct(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    kept: list[str] = []
    for item in items:
        key = caption_key(item)
        if item and key not in seen:
            seen.add(key)
            kept.append(item)
    return kept
