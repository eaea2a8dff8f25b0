"""What every benchmark records next to its numbers: the machine, the libraries, the revision,
the command that ran it; and how its results file is written.

Results files name paths inside the repository relative to its root (``models/openmoji-minilm``,
``benchmarks/results/scale-quick-latency.png``), so that a file means the same on every checkout;
paths outside it (the cache, a temporary directory) stay absolute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info(**extra: Any) -> dict[str, Any]:
    """CPU, memory, OS, Python and library versions, git revision, plus ``extra``."""
    import numpy
    import torch

    import teran_es

    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = float("nan")
    info = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "teran_es": teran_es.__version__,
        "git_revision": _git_revision(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info.update(extra)
    return info


def _script(script_file: str | os.PathLike[str]) -> str:
    """``python benchmarks/NAME.py``: how a benchmark script is run from the repository root."""
    return f"python {repo_relative(script_file)}"


def command_line(script_file: str | os.PathLike[str], argv: Sequence[str] | None = None) -> str:
    """The command that ran the benchmark, as typed: ``python benchmarks/NAME.py ARGS``.

    ``script_file`` is the script's ``__file__``; ``argv`` the arguments its ``main`` was given
    (None: the process's own, ``sys.argv[1:]``). Arguments that are paths inside the repository
    are written relative to it, as the command runs from the repository root.
    """
    args = [relative_paths(a) for a in (sys.argv[1:] if argv is None else argv)]
    return " ".join([_script(script_file), *args])


def command_from_options(
    script_file: str | os.PathLike[str], options: argparse.Namespace, skip: Collection[str] = ()
) -> str:
    """A command that repeats the run with every option spelled out, defaults included:
    ``python benchmarks/NAME.py --name value ...`` for each option with a value (falsy ones and
    those in ``skip`` left out)."""
    spelled = [
        f"--{name.replace('_', '-')} {relative_paths(value)}"
        for name, value in vars(options).items()
        if name not in skip and value
    ]
    return " ".join([_script(script_file), *spelled])


def repo_relative(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the repository root (with ``/``) when it lies inside the repository;
    else absolute (as given when it was)."""
    absolute = Path(path).resolve()
    try:
        return absolute.relative_to(REPO).as_posix()
    except ValueError:
        return os.fspath(path) if Path(path).is_absolute() else str(absolute)


def relative_paths(value: Any) -> Any:
    """``value`` (a results payload: dicts, lists, strings, numbers) with every ``Path``, and every
    string that is an absolute path inside the repository, made repository-relative; anything
    else as it was."""
    if isinstance(value, dict):
        return {key: relative_paths(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [relative_paths(item) for item in value]
    if isinstance(value, Path):
        return repo_relative(value)
    if isinstance(value, str) and value.startswith(os.sep) and "\n" not in value:
        return repo_relative(value)
    return value


def write_results(name: str, payload: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``payload`` as ``benchmarks/results/<name>.json`` (or ``path``), atomically, with
    paths inside the repository made relative to it (``relative_paths``); return the path."""
    target = path or RESULTS_DIR / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(relative_paths(payload), indent=2, default=str) + "\n")
    tmp.replace(target)
    return target
