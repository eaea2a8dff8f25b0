"""Serving helpers: which hosts are loopback, and thumbnails."""

from __future__ import annotations

import pytest
from PIL import Image

from teran_es.web.run import PortUnavailableError, check_port, is_loopback
from teran_es.web.thumbnails import ThumbnailCache, thumbnail_png


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org", ""])
def test_hosts_others_can_reach(host):
    assert not is_loopback(host)


def test_a_thumbnail_is_square_and_keeps_the_aspect(tmp_path):
    import io

    Image.new("RGB", (200, 100), (255, 0, 0)).save(tmp_path / "wide.png")
    thumb = Image.open(io.BytesIO(thumbnail_png(tmp_path / "wide.png", 64)))
    assert thumb.size == (64, 64)
    assert thumb.getpixel((32, 32)) == (255, 0, 0)  # the image, centred
    assert thumb.getpixel((32, 2)) == (255, 255, 255)  # white above and below


def test_the_cache_names_files_by_a_hash_of_the_id(tmp_path):
    Image.new("RGB", (10, 10)).save(tmp_path / "a.png")
    cache = ThumbnailCache(tmp_path / "thumbs")
    path = cache.path_for("../../etc/x", 128)
    assert path.parent == tmp_path / "thumbs" / "128" and ".." not in path.name
    data = cache.get("../../etc/x", tmp_path / "a.png", 128)
    assert path.read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "thumbs" / "128").iterdir()) == [path.name]  # no partial file left


def test_a_taken_port_is_said_before_anything_loads():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortUnavailableError, match=f"127.0.0.1:{port}.*another --port"):
            check_port("127.0.0.1", port)
    check_port("127.0.0.1", port)  # free again
    with pytest.raises(PortUnavailableError, match="cannot serve on"):
        check_port("no-such-host.invalid", 8080)
