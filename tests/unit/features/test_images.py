from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from teran_es.features.images import ImageDecodeError, image_id_for, iter_image_files, load_image


def write_png(path, color=(255, 0, 0), size=(20, 10), mode="RGB"):
    Image.new(mode, size, color).save(path)
    return path


def test_decodes_and_resizes(tmp_path):
    p = write_png(tmp_path / "a.png")
    arr = load_image(p)
    assert arr.shape == (10, 20, 3) and arr.dtype == np.uint8 and tuple(arr[0, 0]) == (255, 0, 0)
    assert load_image(p, size=8).shape == (8, 8, 3)


def test_transparency_becomes_white(tmp_path):
    p = write_png(tmp_path / "t.png", color=(0, 0, 0, 0), mode="RGBA")
    assert tuple(load_image(p)[0, 0]) == (255, 255, 255)


@pytest.mark.parametrize(
    "content, match",
    [(b"", "empty file"), (b"this is not an image", "not an image"), (None, "truncated")],
)
def test_bad_files_are_named(tmp_path, content, match):
    p = tmp_path / "bad.jpg"
    if content is None:
        good = write_png(tmp_path / "good.png", size=(200, 200))
        data = good.read_bytes()
        p = tmp_path / "bad.png"
        p.write_bytes(data[: len(data) // 2])
    else:
        p.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=match) as info:
        load_image(p)
    assert str(p) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="cannot read"):
        load_image(tmp_path / "nope.png")


def test_huge_image_is_refused(tmp_path, monkeypatch):
    import teran_es.features.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    p = write_png(tmp_path / "big.png", size=(20, 20))
    with pytest.raises(ImageDecodeError, match="pixels"):
        load_image(p)


def test_folder_listing_is_stable_and_ids_relative(tmp_path):
    (tmp_path / "b").mkdir()
    write_png(tmp_path / "b" / "z.png")
    write_png(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.png").write_bytes(b"")
    files = list(iter_image_files(tmp_path))
    assert [image_id_for(f, tmp_path) for f in files] == ["a.jpg", "b/z.png"]
