"""Images decoded from bytes in memory (uploads): the same pixels as from a file, and the same
clear errors for what is not an image or is too large."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from teran_es.features.images import MAX_PIXELS, ImageDecodeError, load_image, load_image_bytes


def png(size, mode="RGBA", colour=(200, 10, 10, 128)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, format="PNG")
    return out.getvalue()


def test_bytes_decode_like_the_file(tmp_path):
    data = png((40, 30))
    (tmp_path / "a.png").write_bytes(data)
    np.testing.assert_array_equal(load_image_bytes(data, 16), load_image(tmp_path / "a.png", 16))
    assert load_image_bytes(data).shape == (30, 40, 3)


@pytest.mark.parametrize(
    "data, problem",
    [(b"", "empty"), (b"GIF89a not really", "not an image"), (png((20, 20))[:60], "truncated")],
)
def test_bad_bytes_raise_a_clear_error(data, problem):
    with pytest.raises(ImageDecodeError, match=problem) as caught:
        load_image_bytes(data, 16, name="upload.png")
    assert caught.value.path == "upload.png"


def test_a_decompression_bomb_is_refused_before_decoding():
    side = int(MAX_PIXELS**0.5) + 100
    bomb = png((side, side), mode="1", colour=0)  # a few kB that would decode to ~64 Mpixels
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageDecodeError, match="pixels is more than"):
        load_image_bytes(bomb, 16)
