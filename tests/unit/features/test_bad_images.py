"""`load_image` on files that are not usable images, beyond test_images.py: files the system
will not read (permissions, a directory), and sizes that are refused from the header alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from teran_es.features.images import ImageDecodeError, load_image


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, png_header):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header(9_000, 9_000))
    with pytest.raises(ImageDecodeError, match="9000x9000 pixels is more than 64,000,000"):
        load_image(path)


def test_a_decompression_bomb_is_refused(tmp_path, png_header):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(50_000, 50_000))
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(path)


def test_a_directory_with_an_image_name_cannot_be_read(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageDecodeError, match="cannot read: Is a directory"):
        load_image(tmp_path / "folder.jpg")


def test_a_file_without_read_permission_cannot_be_read(tmp_path):
    """Not reported as a corrupt image: the file may be fine, the permissions are not.
    Root ignores permission bits, so as root the check runs as uid 1000 in a user namespace."""
    from PIL import Image

    path = tmp_path / "private.png"
    Image.new("RGB", (8, 8)).save(path)
    path.chmod(0)
    check = (
        "import sys\n"
        "from teran_es.features.images import ImageDecodeError, load_image\n"
        "try:\n    load_image(sys.argv[1])\n"
        "except ImageDecodeError as exc:\n    print(exc)\n"
    )
    command = [sys.executable, "-c", check, str(path)]
    if os.geteuid() == 0:
        unshare = shutil.which("unshare")
        prefix = [unshare, "--user", "--map-user=1000", "--map-group=1000"] if unshare else None
        if prefix is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
            pytest.skip("running as root without user namespaces: permission bits cannot be tested")
        command = [*prefix, *command]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{path}: cannot read: Permission denied"
