"""`teran-es search --image PATH` / `--image-id ID`: captions for an image, and clear usage errors."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def run(capsys, *args):
    from teran_es.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_captions_for_a_file_and_for_an_id(tiny_openmoji, capsys):
    workdir = tiny_openmoji["workdir"]
    base = ["search", "--pipeline", str(workdir / "config.toml"), "--set", f"workdir={workdir}", "--k", "3"]
    drawing = tiny_openmoji["collection"] / "images" / "1F355.png"
    code, out, _ = run(capsys, *base, "--image", str(drawing), "--json")
    assert code == 0
    by_file = json.loads(out)
    assert by_file["image"] == "1F355.png" and len(by_file["hits"]) == 3
    assert any("pizza" in h["caption"] for h in by_file["hits"])
    code, out, _ = run(capsys, *base, "--image-id", "openmoji-1F355")
    assert code == 0 and "openmoji-1F355: best of" in out and "pizza" in out


def test_usage_errors(tiny_openmoji, capsys, tmp_path):
    workdir = tiny_openmoji["workdir"]
    base = ["search", "--pipeline", str(workdir / "config.toml"), "--set", f"workdir={workdir}"]
    (tmp_path / "notes.txt").write_text("not an image")
    cases = [
        ([*base, "--image", str(tmp_path / "notes.txt")], "not an image"),
        ([*base, "--image", str(tmp_path / "missing.png")], "cannot read --image"),
        ([*base, "--image-id", "nope"], "no image 'nope'"),
        ([*base, "--image-id", "openmoji-2764", "red"], "one of them"),
        (base, "missing the words"),
    ]
    for args, message in cases:
        code, _, err = run(capsys, *args)
        assert code == 2 and message in err, (args, err)
