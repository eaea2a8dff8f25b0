"""Fetching and unpacking the Elasticsearch distribution into the cache.

The server is Elastic's minimal ``integ-test-zip`` distribution fetched from Maven Central
with ``mvn`` (no bundled JDK, only the transport and x-pack core/security modules). Maven
checks it against the checksum files served beside it; when those are missing, a digest
pinned here decides. It is unpacked once per version. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from teran_es.server.errors import LocalServerError
from teran_es.server.state import ServerPaths

# The newest version Maven Central serves that starts with a Java on this project's
# machines (9.5.4 + Temurin 25). Keep the Python client's major (setup.cfg) equal.
ELASTICSEARCH_VERSION = "9.5.4"
# Maven fetches of the distribution: attempts, and the wait before the second (doubled after).
FETCH_ATTEMPTS = 3
FETCH_BACKOFF_S = 5.0
# What Maven says when Maven Central serves no .sha1/.md5 beside the artifact (seen on
# 2026-12-01 for 9.5.4, whose checksum files had been served before).
NO_CHECKSUMS = "no checksums available"
# SHA-256 of the distribution zips, for a fetch that Maven could not check itself. Recorded
# from the file Maven Central served for 9.5.4 (132,432,175 bytes) on 2026-12-01.
PINNED_SHA256 = {"9.5.4": "d9b0c28e08e499f6510b52ad66ec4bf9cdceab97cc28b3456989b8744b896934"}
MAVEN_ARTIFACT = "org.elasticsearch.distribution.integ-test-zip:elasticsearch:{version}:zip"

def download(version: str, paths: ServerPaths, log: Callable[[str], None] = print) -> Path:
    """The distribution zip in the cache, fetched with Maven when missing.

    Maven checks the artifact against the checksum files Maven Central serves beside it
    (``-C``, strict), retrying with backoff: a fresh machine's fetch has failed once and
    worked when run again. When every attempt failed because the checksum files were not
    served at all (not because they disagreed), the zip is fetched once more without Maven's
    check and kept only if its SHA-256 equals the digest pinned for that version in
    ``PINNED_SHA256``; a version without a pinned digest is refused.
    """
    target = paths.downloads / f"elasticsearch-{version}.zip"
    if target.is_file() and zipfile.is_zipfile(target):
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalServerError(
            "Maven (`mvn`) is needed to fetch Elasticsearch from Maven Central: install it "
            "(e.g. `apt-get install maven`), or set ELASTICSEARCH_URL to use a server you already have."
        )
    paths.downloads.mkdir(parents=True, exist_ok=True)
    artifact = MAVEN_ARTIFACT.format(version=version)
    log(f"fetching {artifact} with Maven into {paths.downloads} ...")
    outputs = []
    for attempt in range(1, FETCH_ATTEMPTS + 1):
        code, output = _maven_copy(mvn, artifact, paths.downloads, strict_checksums=True)
        if code == 0 and target.is_file():
            return target
        outputs.append(output)
        if attempt < FETCH_ATTEMPTS:
            wait = FETCH_BACKOFF_S * 2 ** (attempt - 1)
            log(f"Maven fetch failed (attempt {attempt} of {FETCH_ATTEMPTS}); retrying in {wait:.0f} s")
            time.sleep(wait)
    tail = "\n".join(outputs[-1].strip().splitlines()[-20:])
    if all(NO_CHECKSUMS in out for out in outputs) and version in PINNED_SHA256:
        log("Maven Central serves no checksum files for it now; fetching it unchecked and checking "
            "its SHA-256 against the digest pinned for this version ...")
        code, output = _maven_copy(mvn, artifact, paths.downloads, strict_checksums=False)
        if code == 0 and target.is_file():
            digest = _sha256(target)
            if digest == PINNED_SHA256[version]:
                return target
            target.unlink()
            raise LocalServerError(
                f"{artifact} came without Maven Central checksum files, and its SHA-256 {digest} is not the "
                f"pinned {PINNED_SHA256[version]}: the file was deleted. Try again later, or set "
                "ELASTICSEARCH_URL to use a server you already have."
            )
        tail = "\n".join(output.strip().splitlines()[-20:])
    raise LocalServerError(
        f"Maven could not fetch {artifact} after {FETCH_ATTEMPTS} attempts. Check that the version exists "
        "on Maven Central and that the network or your Maven mirror is reachable, then run "
        "`teran-es elasticsearch start` again; or set ELASTICSEARCH_URL to use a server you already "
        f"have.\n{tail}"
    )


def _maven_copy(mvn: str, artifact: str, directory: Path, strict_checksums: bool) -> tuple[int, str]:
    """``mvn dependency:copy`` of ``artifact`` into ``directory``: (exit code, its output)."""
    cmd = [mvn, "-q", "-B", "-C" if strict_checksums else "-c", "dependency:copy",
           f"-Dartifact={artifact}", f"-DoutputDirectory={directory}"]
    # cwd: Maven must not pick up some unrelated pom.xml from where the user happens to be.
    proc = subprocess.run(cmd, cwd=directory, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract(zip_path: Path, dest: Path) -> None:
    """Unzip keeping the Unix permission bits (zipfile drops them; bin/ must stay executable)."""
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            # extract() already refuses absolute names and '..' components.
            out = Path(archive.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o7777
            if mode and not stat.S_ISLNK(info.external_attr >> 16):
                os.chmod(out, mode)


def install(version: str, paths: ServerPaths, log: Callable[[str], None] = print) -> Path:
    """The unpacked distribution (downloaded and unpacked once; atomic: unpack aside, then rename)."""
    home = paths.home(version)
    if (home / "bin" / "elasticsearch").is_file():
        return home
    zip_path = download(version, paths, log)
    paths.dist.mkdir(parents=True, exist_ok=True)
    staging = paths.dist / f".unpacking-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    log(f"unpacking {zip_path.name} into {paths.dist} ...")
    try:
        _extract(zip_path, staging)
        unpacked = staging / f"elasticsearch-{version}"
        if not (unpacked / "bin" / "elasticsearch").is_file():
            raise LocalServerError(f"{zip_path} does not contain elasticsearch-{version}/bin/elasticsearch")
        try:
            os.rename(unpacked, home)
        except OSError:
            if not (home / "bin" / "elasticsearch").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home
