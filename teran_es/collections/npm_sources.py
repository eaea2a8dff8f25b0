"""Emoji drawings by other artists, from npm packages, read as they ship.

Each package is fetched once with ``npm pack NAME@VERSION`` into ``<cache>/npm/`` and read
from its tarball (nothing is installed, no package code runs):

* ``@iconify-json/fluent-emoji-flat``: Microsoft's Fluent Emoji (flat), MIT. ``icons.json``
  holds every drawing as an SVG body (aliases point at a parent, maybe flipped);
  ``chars.json`` maps code point sequences to icon names.
* ``emoji-datasource-google``: Google's Noto Emoji as 64 px PNGs, Apache-2.0;
  ``emoji.json`` names each image (with its skin-tone variations).
* ``@twemoji/svg``: Twitter's Twemoji, graphics CC-BY 4.0; one SVG per code sequence.

A source that cannot be fetched (no npm, no network) raises :class:`SourceUnavailable`; the
collection builder skips it and says why.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from teran_es.errors import TeranError

_CODE = re.compile(r"^[0-9a-f]{2,6}(-[0-9a-f]{2,6})*$")


class SourceUnavailable(TeranError, RuntimeError):
    """An npm source that could not be fetched or read; the message says why."""


@dataclass(frozen=True)
class NpmSource:
    """One artist's drawings in an npm package."""

    key: str  # short name: images are "<key>-<code>"
    package: str
    version: str
    artist: str
    license: str
    attribution: str

    @property
    def tarball_name(self) -> str:
        """The file ``npm pack`` writes: scope and name joined by a dash, then the version."""
        return f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    @property
    def label(self) -> str:
        return f"{self.package}@{self.version} (npm)"


FLUENT = NpmSource(
    "fluent",
    "@iconify-json/fluent-emoji-flat",
    "1.2.6",
    "Microsoft (Fluent Emoji)",
    "MIT",
    "Fluent Emoji by Microsoft (https://github.com/microsoft/fluentui-emoji), MIT License",
)
NOTO = NpmSource(
    "noto",
    "emoji-datasource-google",
    "16.0.0",
    "Google (Noto Emoji)",
    "Apache-2.0",
    "Noto Emoji by Google (https://github.com/googlefonts/noto-emoji), Apache License 2.0, "
    "as packaged by emoji-datasource-google",
)
TWEMOJI = NpmSource(
    "twemoji",
    "@twemoji/svg",
    "15.0.0",
    "Twitter (Twemoji)",
    "CC-BY 4.0",
    "Twemoji graphics by Twitter, Inc and other contributors (https://github.com/jdecked/twemoji), "
    "CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/)",
)
NPM_SOURCES = {source.key: source for source in (FLUENT, NOTO, TWEMOJI)}


@dataclass(frozen=True)
class SourceImage:
    """One drawing as its package has it: an SVG text, or a PNG's bytes."""

    code: str  # upper-case code point sequence, e.g. "1F600" or "1F468-200D-1F469"
    svg: str | None = None
    png: bytes | None = None
    own_name: str = ""  # what the package calls it (used when no caption source knows the code)


def fetch(source: NpmSource, npm_dir: Path, npm: str = "npm", timeout: float = 300.0) -> Path:
    """The package's tarball in ``npm_dir``, fetched with ``npm pack`` unless already there."""
    tarball = npm_dir / source.tarball_name
    if tarball.is_file():
        return tarball
    if shutil.which(npm) is None:
        raise SourceUnavailable(f"{source.label}: npm is not installed (it fetches the package)")
    npm_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [npm, "pack", f"{source.package}@{source.version}", "--pack-destination", str(npm_dir), "--silent"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceUnavailable(f"{source.label}: npm pack failed ({exc})") from None
    if done.returncode != 0 or not tarball.is_file():
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise SourceUnavailable(
            f"{source.label}: npm pack failed ({detail[-1] if detail else f'exit {done.returncode}'}); "
            "no network or no registry?"
        )
    return tarball


def _members(tarball: Path) -> dict[str, bytes]:
    """Regular files of a package tarball by path inside the package (``package/`` dropped)."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            files = {}
            for member in archive.getmembers():
                if member.isfile():
                    name = member.name.split("/", 1)[1] if "/" in member.name else member.name
                    files[name] = archive.extractfile(member).read()
            return files
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise SourceUnavailable(f"{tarball}: not a readable npm tarball ({exc})") from None


def _code(text: str) -> str | None:
    text = text.strip().lower()
    return text.upper() if _CODE.match(text) else None


def read_source(source: NpmSource, tarball: Path) -> Iterator[SourceImage]:
    """The drawings of ``source`` in its tarball."""
    files = _members(tarball)
    readers = {"fluent": _read_fluent, "noto": _read_noto, "twemoji": _read_twemoji}
    try:
        yield from readers[source.key](files)
    except (KeyError, ValueError) as exc:
        raise SourceUnavailable(f"{source.label}: unexpected package layout ({type(exc).__name__}: {exc})") from None


def _read_fluent(files: dict[str, bytes]) -> Iterator[SourceImage]:
    icons = json.loads(files["icons.json"])
    chars = json.loads(files["chars.json"])
    width, height = icons.get("width", 16), icons.get("height", 16)
    for raw_code, name in sorted(chars.items()):
        code = _code(raw_code)
        body = fluent_body(icons, name)
        if code is None or body is None:
            continue
        svg = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{body}</svg>'
        )
        yield SourceImage(code, svg=svg, own_name=name.replace("-", " "))


def fluent_body(icons: dict, name: str, depth: int = 0) -> str | None:
    """The SVG body of icon ``name``, following aliases (a parent, flipped as the alias says)."""
    if name in icons["icons"]:
        return icons["icons"][name]["body"]
    alias = icons.get("aliases", {}).get(name)
    if alias is None or depth > 4:
        return None
    body = fluent_body(icons, alias["parent"], depth + 1)
    if body is None:
        return None
    width, height = icons.get("width", 16), icons.get("height", 16)
    if alias.get("hFlip"):
        body = f'<g transform="translate({width} 0) scale(-1 1)">{body}</g>'
    if alias.get("vFlip"):
        body = f'<g transform="translate(0 {height}) scale(1 -1)">{body}</g>'
    return body


def _read_noto(files: dict[str, bytes]) -> Iterator[SourceImage]:
    entries = json.loads(files["emoji.json"])
    for entry in entries:
        variants = [entry, *entry.get("skin_variations", {}).values()]
        for variant in variants:
            png = files.get(f"img/google/64/{variant.get('image', '')}")
            code = _code(variant.get("unified", ""))
            if png is None or code is None or not variant.get("has_img_google", True):
                continue
            yield SourceImage(code, png=png, own_name=(entry.get("name") or "").lower())


def _read_twemoji(files: dict[str, bytes]) -> Iterator[SourceImage]:
    for name in sorted(files):
        if "/" in name or not name.endswith(".svg"):
            continue
        code = _code(name[: -len(".svg")])
        if code is not None:
            yield SourceImage(code, svg=files[name].decode("utf-8"))
