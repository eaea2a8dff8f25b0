"""Rendering SVG drawings to RGB PNGs on white, in worker processes when there are many.

A drawing that fails (or renders blank) is reported with the reason, not fatal: the
collection leaves it out and its manifest says why.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from teran_es.collections.files import write_atomically

MAX_RENDER_WORKERS = 2  # the machines this runs on are small and shared
MIN_JOBS_FOR_POOL = 16  # below this, starting worker processes costs more than it saves
RENDER_FAILED = "render failed"


def png_size(path: Path) -> tuple[int, int, int] | None:
    """(width, height, PNG colour type) from the header, or None when it is no PNG."""
    try:
        with path.open("rb") as fh:
            head = fh.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width, height, head[25]


def is_rendered(path: Path, size: int) -> bool:
    """Whether ``path`` already holds an RGB PNG of ``size`` x ``size`` (a rebuild reuses it)."""
    return png_size(path) == (size, size, 2)  # colour type 2 = RGB


def render_svg(svg_path: str, png_path: str, size: int) -> str | None:
    """Render one SVG to an RGB PNG on white; returns None, or why it failed.

    Module-level so that a process pool can pickle it. The PNG appears atomically.
    """
    try:
        import cairosvg
        from PIL import Image

        svg_bytes = Path(svg_path).read_bytes()
        png_bytes = cairosvg.svg2png(bytestring=svg_bytes, output_width=size, output_height=size)
        with Image.open(io.BytesIO(png_bytes)) as rendered:
            rgba = rendered.convert("RGBA")
        if rgba.size != (size, size):
            rgba = rgba.resize((size, size), Image.Resampling.LANCZOS)
        image = Image.new("RGB", (size, size), "white")
        image.paste(rgba, mask=rgba.getchannel("A"))
        if all(low == 255 for low, _ in image.getextrema()):
            return f"{RENDER_FAILED}: the drawing rendered as a blank image"
        write_atomically(Path(png_path), lambda tmp: image.save(tmp, format="PNG", optimize=True))
    except Exception as exc:  # any failure of one drawing is reported, not fatal
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{RENDER_FAILED}: {type(exc).__name__}" + (f": {message}" if message else "")
    return None


def _render_job(job: tuple[str, str, str, int]) -> tuple[str, str | None]:
    code, svg_path, png_path, size = job
    return code, render_svg(svg_path, png_path, size)


def render_all(jobs: list[tuple[str, str, str, int]], workers: int, progress: bool) -> dict[str, str]:
    """Render the jobs (code, svg, png, size); returns {code: reason} for the failures."""
    from tqdm import tqdm

    failures: dict[str, str] = {}
    workers = max(1, min(workers, MAX_RENDER_WORKERS)) if len(jobs) >= MIN_JOBS_FOR_POOL else 1
    bar = tqdm(total=len(jobs), desc="rendering OpenMoji", unit="img", disable=not progress or not jobs)
    try:
        if workers == 1:
            results: Iterator[tuple[str, str | None]] = map(_render_job, jobs)
            for code, failure in results:
                if failure:
                    failures[code] = failure
                bar.update()
        else:
            # spawn: the parent may hold threads (torch, tqdm) that fork would copy mid-flight.
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                for code, failure in pool.map(_render_job, jobs, chunksize=32):
                    if failure:
                        failures[code] = failure
                    bar.update()
    finally:
        bar.close()
    return failures
