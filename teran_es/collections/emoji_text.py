"""Descriptions of emoji from sources no one here wrote, turned into short captions.

Three sources, read as they ship:

* Unicode character names (``unicodedata``), for single code points;
* the PyPI package ``emoji``: a name and aliases (GitHub/Slack short codes) per emoji;
* the Unicode CLDR English annotations: a spoken name, keywords and flag names.

The last two are read by ``emoji_sources.py``; code point sequences are ``emoji_codes.py``.
This module normalises what the sources say into one :class:`Description` per sequence and
turns it into captions. CLDR is the subset teran-es ships unless another CLDR directory is
named, so the captions are the same on every machine; the manifest of a collection says
which sources (and versions) were used.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from teran_es.collections.emoji_codes import (
    code_to_text,
    has_skin_tone,
    regional_flag_letters,
    split_group,
    subdivision_flag_code,
    without_variation_selectors,
)
from teran_es.collections.emoji_sources import (
    CLDR_DIR_ENV,
    CldrAnnotations,
    EmojiPackageEntry,
    emoji_package_version,
    load_cldr,
    load_emoji_package,
)

log = logging.getLogger(__name__)

MAX_CAPTIONS = 5
MAX_KEYWORDS_PER_CAPTION = 6
MIN_ALIAS_CHARS = 3  # shorter aliases are country codes or symbols (":it:", ":+1:"), not words

# Words that make an article form ("a dog face") ungrammatical when they start or end a name.
_PLURAL_WORDS = frozenset({"people", "men", "women", "children", "feet", "teeth", "mice", "geese"})
_SINGULAR_S_ENDINGS = ("ss", "us", "is", "ous")


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
        """A describer of the installed sources (CLDR from ``cldr_dir`` or ``TERAN_ES_CLDR_DIR``
        when named, else the bundled subset)."""
        cldr = load_cldr(cldr_dir)
        if cldr is None:
            log.warning(
                "no CLDR annotations in the directory named (cldr_dir or %s); "
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
        if has_skin_tone(code) and base_code != code:  # a lone skin-tone swatch is its own base
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
