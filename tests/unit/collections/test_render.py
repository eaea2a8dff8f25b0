"""Rendering one drawing: an RGB PNG of the asked size, or the reason it failed."""

from __future__ import annotations

from pathlib import Path

from teran_es.collections.render import RENDER_FAILED, is_rendered, png_size, render_svg

CIRCLE = (
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 72 72'>"
    "<circle cx='36' cy='36' r='20' fill='#d22f27'/></svg>"
)


def test_a_drawing_becomes_an_rgb_png_of_the_asked_size(tmp_path: Path):
    svg, png = tmp_path / "c.svg", tmp_path / "c.png"
    svg.write_text(CIRCLE)
    assert render_svg(str(svg), str(png), 24) is None
    assert png_size(png) == (24, 24, 2) and is_rendered(png, 24) and not is_rendered(png, 32)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_blank_and_broken_drawings_say_why(tmp_path: Path):
    blank, broken = tmp_path / "blank.svg", tmp_path / "broken.svg"
    blank.write_text("<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 72 72'/>")
    broken.write_text("<svg xmlns='http://www.w3.org/2000/svg'><g>")
    assert "blank" in render_svg(str(blank), str(tmp_path / "blank.png"), 24)
    assert render_svg(str(broken), str(tmp_path / "broken.png"), 24).startswith(RENDER_FAILED)
    assert not (tmp_path / "blank.png").exists() and png_size(broken) is None
