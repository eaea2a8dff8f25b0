"""fast-plaid peer: a PLAID multi-vector index (https://github.com/lightonai/fast-plaid, PyPI
``fast-plaid``) over the images' region vectors. Its late-interaction MaxSim score (for every
query vector the best dot product over a document's vectors, summed over query vectors) is
exactly MrSw on L2-normalised vectors, so it searches for the same thing teran-es does.

Its own virtual environment
---------------------------
fast-plaid 1.7.0.2110 is compiled against torch 2.11.0 and crashes (segfault) under the project's
torch, so it never runs in the project's interpreter. :class:`FastPlaidPeer` runs
``fast_plaid_worker.py`` with the python of a separate virtual environment and exchanges data
through .npy / JSON files in the workdir. The environment is, in order: the ``venv`` argument, the
``TERAN_ES_FAST_PLAID_VENV`` environment variable, or
``teran_es.config.default_cache_dir() / "bench" / "venv-fast-plaid"``. When the default one is
missing it is created (``python -m venv`` + ``pip install fast-plaid==1.7.0.2110 torch==2.11.0
numpy``): about 5 GB, because the torch wheel pulls the CUDA libraries from PyPI.

Settings
--------
Build (``FastPlaid.create``): fast-plaid's own defaults, which its README recommends and which
1.7.0.2110 declares in ``FastPlaid.create``: ``nbits=4`` (4-bit residuals), ``kmeans_niters=4``,
``max_points_per_centroid=256``, ``n_samples_kmeans=None`` (then ``16*sqrt(120*N)`` documents
and ``2**floor(log2(16*sqrt(N*R)))`` centroids), ``batch_size=25_000`` documents, ``seed=42``.
The worker reports the library's declared defaults next to what was used (``library_defaults``).
The documents are not streamed through ``FastPlaid.update``: an update trains nothing new
unless its own buffer overflows, so a chunked build would train the centroids on the first chunk
only. Instead ``create`` receives N tensors that are views of one memory-mapped float16 file, so
nothing is loaded up front and fast-plaid reads them in its ``batch_size`` chunks. A float16
np.memmap given to :meth:`build` is used in place; anything else is first written (in chunks) as
a float16 .npy in the workdir and removed after the build.

Search (``FastPlaid.search``): the library defaults ``n_ivf_probe=8``, ``n_full_scores=4096``,
``batch_size="auto"``; sweep ``n_ivf_probe`` / ``n_full_scores`` as settings (``n_full_scores`` is
raised to ``k`` when smaller: fast-plaid returns at most that many documents). ``search`` times
every query alone inside the worker (a single-query ``search`` call, ``n_processes=1``; one
untimed warm-up query loads the index first); ``search_batched`` times one call over all queries
(``n_processes=threads``, fast-plaid's own CPU parallelism); ``search_all`` does both in one
worker run. Worker start-up and index loading are not in either number (``last_search`` has them).

The index lives in ``workdir/fast-plaid-n{N}-{key}/`` (``key`` hashes the settings, the shape and
a fingerprint of a few images); a rerun with the same settings loads it (``loaded_from_cache``).
``bytes`` is the apparent size of that directory (``bytes_allocated``: blocks on disk).
"""

from __future__ import annotations

import collections
import fcntl
import json
import mmap
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from . import _util

WORKER = Path(__file__).resolve().with_name("fast_plaid_worker.py")
VENV_ENV_VAR = "TERAN_ES_FAST_PLAID_VENV"
PIP_REQUIREMENTS = ["fast-plaid==1.7.0.2110", "torch==2.11.0", "numpy"]
_MARKER = ".teran-es-venv-complete"

# fast-plaid 1.7.0.2110's own defaults (FastPlaid.create / FastPlaid.search), passed explicitly so
# that they are part of the cache key and of the reported settings.
CREATE_DEFAULTS: dict[str, Any] = {
    "nbits": 4,
    "kmeans_niters": 4,
    "max_points_per_centroid": 256,
    "n_samples_kmeans": None,
    "batch_size": 25_000,
    "seed": 42,
}
SEARCH_DEFAULTS: dict[str, Any] = {
    "n_ivf_probe": 8,
    "n_full_scores": 4096,
    "batch_size": "auto",
}


class FastPlaidError(RuntimeError):
    """The fast-plaid worker or its virtual environment failed."""


def default_venv() -> Path:
    """``$TERAN_ES_FAST_PLAID_VENV`` or ``default_cache_dir()/bench/venv-fast-plaid``."""
    env = os.environ.get(VENV_ENV_VAR)
    if env:
        return Path(env).expanduser()
    from teran_es.config import default_cache_dir

    return default_cache_dir() / "bench" / "venv-fast-plaid"


def venv_python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def _worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(var, None)  # never let the project's packages (its torch) leak into the venv
    env["PYTHONNOUSERSITE"] = "1"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(threads)
    return env


def _venv_works(python: Path) -> bool:
    try:
        out = subprocess.run(
            [str(python), "-c", "import fast_plaid.search, torch"],
            capture_output=True,
            timeout=300,
            env=_worker_env(1),
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0


def ensure_venv(venv: Path | None = None, create: bool = True) -> Path:
    """Return the python of a working fast-plaid virtual environment, creating the default one
    if needed (about 5 GB). An explicitly named environment is never modified."""
    explicit = venv is not None or bool(os.environ.get(VENV_ENV_VAR))
    venv = Path(venv) if venv is not None else default_venv()
    python = venv_python(venv)
    if python.exists() and ((venv / _MARKER).exists() or _venv_works(python)):
        return python
    if explicit:
        raise FastPlaidError(
            f"{venv} is not a working fast-plaid virtual environment ({python} cannot import fast_plaid "
            f"and torch). Create it with:\n  python -m venv {venv} && {venv}/bin/pip install "
            + " ".join(PIP_REQUIREMENTS)
        )
    if not create:
        raise FastPlaidError(f"the fast-plaid virtual environment {venv} does not exist")
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two benchmark processes must not install at once
        if python.exists() and ((venv / _MARKER).exists() or _venv_works(python)):
            return python
        print(
            f"[fast-plaid peer] creating the virtual environment {venv}:\n"
            f"  fast-plaid 1.7.0.2110 is compiled against torch 2.11.0 and crashes under the project's\n"
            f"  torch, so it gets its own environment: pip install {' '.join(PIP_REQUIREMENTS)}\n"
            f"  This downloads about 5 GB (torch pulls its CUDA wheels) and takes several minutes.",
            file=sys.stderr,
            flush=True,
        )
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", *PIP_REQUIREMENTS],
        ]
        for cmd in steps:
            rc = subprocess.run(cmd, env=_worker_env(os.cpu_count() or 1)).returncode
            if rc != 0:
                raise FastPlaidError(
                    f"creating the fast-plaid virtual environment failed: {' '.join(cmd)} exited with {rc}. "
                    f"Remove {venv} and retry, or point {VENV_ENV_VAR} at a working environment."
                )
        if not _venv_works(python):
            raise FastPlaidError(f"{venv} was created but its python cannot import fast_plaid and torch")
        (venv / _MARKER).write_text(" ".join(PIP_REQUIREMENTS) + "\n")
    return python


def memmap_source(regions: np.ndarray) -> tuple[str, int] | None:
    """``(file, byte offset)`` where a C-contiguous float16 np.memmap's data sits on disk, so
    the worker can map the same bytes; ``None`` when the array is anything else (or a
    copy-on-write map whose memory may differ from the file)."""
    if not isinstance(regions, np.memmap) or regions.dtype != np.float16 or not regions.flags.c_contiguous:
        return None
    filename = getattr(regions, "filename", None)
    mm = getattr(regions, "_mmap", None)
    if not filename or mm is None or getattr(regions, "mode", "r") == "c":
        return None
    try:
        base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    except (TypeError, ValueError):
        return None
    start = regions.offset - regions.offset % mmap.ALLOCATIONGRANULARITY
    offset = start + (regions.ctypes.data - base)
    if getattr(regions, "mode", "r") in ("r+", "w+"):
        regions.flush()
    # sanity check: the first and last image read back from the file at that offset
    n, r, d = regions.shape
    check = np.memmap(filename, dtype=np.float16, mode="r", offset=offset, shape=(n, r, d))
    if not (np.array_equal(check[0], regions[0]) and np.array_equal(check[-1], regions[-1])):
        return None
    return str(filename), int(offset)


class FastPlaidPeer:
    """fast-plaid (PLAID) in its own virtual environment; see the module docstring."""

    name = "fast-plaid"

    def __init__(
        self,
        threads: int | None = None,
        venv: Path | str | None = None,
        create_venv: bool = True,
        verbose: bool = True,
    ) -> None:
        self.threads = threads
        self.venv = Path(venv) if venv is not None else None
        self.create_venv = create_venv
        self.verbose = verbose
        self.python: Path | None = None
        self.index_dir: Path | None = None
        self.workdir: Path | None = None
        self.n_images = self.dim = 0
        self.build_stats: dict[str, Any] | None = None
        self.last_search: dict[str, Any] = {}

    # ------------------------------------------------------------------ worker
    def _python(self) -> Path:
        if self.python is None:
            self.python = ensure_venv(self.venv, create=self.create_venv)
        return self.python

    def _run_worker(self, request: dict[str, Any], threads: int) -> dict[str, Any]:
        assert self.workdir is not None
        tag = uuid.uuid4().hex[:10]
        req_path = self.workdir / f"fp-request-{tag}.json"
        resp_path = self.workdir / f"fp-response-{tag}.json"
        request = {**request, "threads": threads, "response": str(resp_path)}
        req_path.write_text(json.dumps(request, indent=2, default=str))
        cmd = [str(self._python()), str(WORKER), str(req_path)]
        tail: collections.deque[str] = collections.deque(maxlen=80)
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=_worker_env(threads),
                text=True,
                errors="replace",
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line)
                if self.verbose:
                    sys.stderr.write(line)
            rc = proc.wait()
            if rc != 0 or not resp_path.exists():
                why = f"exited with {rc}"
                if rc < 0:
                    try:
                        why = f"was killed by {signal.Signals(-rc).name}"
                    except ValueError:
                        why = f"was killed by signal {-rc}"
                    if -rc == signal.SIGSEGV:
                        why += (
                            " (fast-plaid crashes when the torch it runs with is not the one it was built "
                            "against, torch 2.11.0: check the virtual environment)"
                        )
                    elif -rc == signal.SIGKILL:
                        why += " (out of memory?)"
                raise FastPlaidError(
                    f"fast-plaid worker {why}.\n  command: {' '.join(cmd)}\n  request: {req_path}\n"
                    f"  last output:\n" + "".join("    " + line for line in tail)
                )
            resp = json.loads(resp_path.read_text())
        finally:
            resp_path.unlink(missing_ok=True)
        req_path.unlink(missing_ok=True)
        return resp

    def info(self) -> dict[str, Any]:
        """Versions and fast-plaid's declared create/search defaults (runs the worker)."""
        if self.workdir is None:
            raise RuntimeError("call build() first (info needs a workdir)")
        return self._run_worker({"command": "info"}, threads=1)

    # ------------------------------------------------------------------ build
    def build(self, regions: np.ndarray, workdir: Path, **settings: Any) -> dict[str, Any]:
        """Build (or load from ``workdir``) the index over ``regions`` ``[N, R, D]``; return stats
        ``seconds`` (the ``create`` call; for a cached index the original build's), ``bytes`` (index
        directory), ``settings``, ``version``, ``loaded_from_cache`` and details."""
        settings = dict(settings)
        threads = settings.pop("threads", None)
        keep_docs = bool(settings.pop("keep_docs", False))
        if threads is not None:
            self.threads = threads
        unknown = sorted(set(settings) - set(CREATE_DEFAULTS))
        if unknown:
            raise TypeError(
                f"unknown fast-plaid build settings {unknown}; known: {sorted(CREATE_DEFAULTS)}, threads, keep_docs"
            )
        resolved = {**CREATE_DEFAULTS, **settings}
        nthreads = _util.resolve_threads(self.threads)
        n, r, d = _util.check_regions(regions)
        fingerprint = _util.data_fingerprint(regions)
        key = _util.cache_key(n=n, r=r, d=d, settings=resolved, fingerprint=fingerprint)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.index_dir = self.workdir / f"fast-plaid-n{n}-{key}"
        self.n_images, self.dim = n, d
        meta_path = self.index_dir / "teran-es-build.json"

        meta = _util.read_json(meta_path)
        if meta is not None:
            stats = {**meta, "loaded_from_cache": True, "threads": nthreads}
            self.build_stats = stats
            return stats
        if self.index_dir.exists():
            shutil.rmtree(self.index_dir)  # an interrupted build

        t_start = time.perf_counter()
        self._python()
        source = memmap_source(regions)
        docs_path: Path | None = None
        convert_seconds = 0.0
        if source is None:
            t0 = time.perf_counter()
            docs_path = self.workdir / f"fast-plaid-docs-{key}.npy"
            out = np.lib.format.open_memmap(docs_path, mode="w+", dtype=np.float16, shape=(n, r, d))
            for start, chunk in _util.iter_chunks(regions, 8192, dtype=np.float16):
                out[start : start + len(chunk)] = chunk
            out.flush()
            offset = int(out.offset)
            del out
            source = (str(docs_path), offset)
            convert_seconds = time.perf_counter() - t0
        try:
            resp = self._run_worker(
                {
                    "command": "build",
                    "docs": {"path": source[0], "offset": source[1], "shape": [n, r, d]},
                    "index_dir": str(self.index_dir),
                    "create": resolved,
                },
                threads=nthreads,
            )
        finally:
            if docs_path is not None and not keep_docs:
                docs_path.unlink(missing_ok=True)
        total_seconds = time.perf_counter() - t_start
        sizes = _util.path_bytes(self.index_dir)
        stats = {
            "peer": self.name,
            "seconds": resp["seconds"],
            "total_seconds": total_seconds,
            "convert_seconds": convert_seconds,
            "settings": resolved,
            "library_defaults": _library_defaults_note(resp["library_defaults"], resolved),
            "version": resp["versions"]["fast_plaid"],
            "versions": resp["versions"],
            "library": "fast-plaid",
            "n_images": n,
            "regions_per_image": r,
            "dim": d,
            "n_vectors": n * r,
            "regions_dtype": str(regions.dtype),
            "documents_from": "memmap in place" if docs_path is None else "float16 copy in workdir",
            "worker_peak_rss_bytes": resp["peak_rss_bytes"],
            "index_path": str(self.index_dir),
            "fingerprint": fingerprint,
            "build_threads": nthreads,
            **sizes,
        }
        _util.write_json_atomic(meta_path, stats)
        stats = {**stats, "loaded_from_cache": False, "threads": nthreads}
        self.build_stats = stats
        return stats

    # ------------------------------------------------------------------ search
    def _search(
        self, query_words: list[np.ndarray], k: int, mode: str, settings: dict[str, Any]
    ) -> dict[str, Any]:
        if self.index_dir is None or self.workdir is None:
            raise RuntimeError("FastPlaidPeer.search called before build()")
        settings = dict(settings)
        threads = settings.pop("threads", None)
        unknown = sorted(set(settings) - set(SEARCH_DEFAULTS))
        if unknown:
            raise TypeError(
                f"unknown fast-plaid search settings {unknown}; known: {sorted(SEARCH_DEFAULTS)} and threads"
            )
        resolved = {**SEARCH_DEFAULTS, **settings}
        # fast-plaid ranks at most n_full_scores documents: never ask for fewer than k
        resolved["n_full_scores"] = max(int(resolved["n_full_scores"]), int(k))
        nthreads = _util.resolve_threads(threads if threads is not None else self.threads)
        queries = []
        for q in query_words:
            q = np.ascontiguousarray(q, dtype=np.float32)
            if q.ndim != 2 or q.shape[1] != self.dim or q.shape[0] == 0:
                raise ValueError(f"each query must be a non-empty [W, {self.dim}] array, got {q.shape}")
            queries.append(q)
        tag = uuid.uuid4().hex[:10]
        q_path = self.workdir / f"fp-queries-{tag}.npy"
        l_path = self.workdir / f"fp-lengths-{tag}.npy"
        out = self.workdir / f"fp-result-{tag}"
        flat = np.concatenate(queries) if queries else np.zeros((0, self.dim), np.float32)
        np.save(q_path, flat)
        np.save(l_path, np.asarray([len(q) for q in queries], dtype=np.int64))
        t0 = time.perf_counter()
        try:
            resp = self._run_worker(
                {
                    "command": "search",
                    "index_dir": str(self.index_dir),
                    "queries": str(q_path),
                    "lengths": str(l_path),
                    "k": int(k),
                    "search": resolved,
                    "mode": mode,
                    "out": str(out),
                },
                threads=nthreads,
            )
            result: dict[str, Any] = {}
            for part in ("single", "batched"):
                ids_path = out.with_name(out.name + f"-{part}-ids.npy")
                if ids_path.exists():
                    ids = np.load(ids_path)
                    result[f"{part}_ids"] = [[int(x) for x in row if x >= 0] for row in ids]
                    result[f"{part}_scores"] = np.load(out.with_name(out.name + f"-{part}-scores.npy"))
                lat_path = out.with_name(out.name + f"-{part}-latencies.npy")
                if lat_path.exists():
                    result["latencies"] = [float(x) for x in np.load(lat_path)]
        finally:
            for p in (q_path, l_path, *self.workdir.glob(f"fp-result-{tag}-*.npy")):
                p.unlink(missing_ok=True)
        self.last_search = {
            "settings": resp["settings"],
            "threads": nthreads,
            "load_seconds": resp["load_seconds"],
            "worker_seconds": time.perf_counter() - t0,
            "worker_peak_rss_bytes": resp.get("peak_rss_bytes"),
        }
        if "batched_seconds" in resp:
            result["batched_seconds"] = resp["batched_seconds"]
        return result

    def search(
        self, query_words: list[np.ndarray], k: int, **settings: Any
    ) -> tuple[list[list[int]], list[float]]:
        """Single-query mode: per query up to ``k`` image ids (best first) and its wall time."""
        r = self._search(query_words, k, "single", settings)
        return r.get("single_ids", []), r.get("latencies", [])

    def search_batched(
        self, query_words: list[np.ndarray], k: int, **settings: Any
    ) -> tuple[list[list[int]], float]:
        """One fast-plaid call over all queries; total seconds of that call."""
        r = self._search(query_words, k, "batched", settings)
        return r.get("batched_ids", []), float(r.get("batched_seconds", 0.0))

    def search_all(self, query_words: list[np.ndarray], k: int, **settings: Any) -> dict[str, Any]:
        """Both modes in one worker run: ``single_ids``, ``latencies``, ``batched_ids``,
        ``batched_seconds`` (and the scores fast-plaid computed)."""
        return self._search(query_words, k, "both", settings)


def _library_defaults_note(library: dict[str, Any], used: dict[str, Any]) -> dict[str, Any]:
    """fast-plaid's declared create defaults, with a flag where ours differ from them."""
    declared = {k: library.get(k) for k in used}
    return {"declared": declared, "differs": sorted(k for k in used if declared.get(k) != used[k])}
