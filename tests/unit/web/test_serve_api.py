"""The JSON API against a real `teran-es serve` process over a small OpenMoji collection
(the first committed model, the embedded index): hits as the CLI gives them, images,
thumbnails, search by image, and every bad input of the issue answered with a 4xx and a
message; and the alignment view over the demo's own model (pretrained regions, a query bank)."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def call(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, object, dict]:
    """(status, JSON body or bytes, headers) of one request; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, body, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, body, got = error.code, error.read(), dict(error.headers)
    if got.get("content-type", "").startswith("application/json"):
        return status, json.loads(body), got
    return status, body, got


def png_bytes(size=(96, 96), colour=(220, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def declare_upload(server: str, size: int) -> tuple[int, dict]:
    """Announce an upload of ``size`` bytes and wait for the answer before sending any."""
    import http.client

    parsed = urllib.parse.urlsplit(server)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        connection.putrequest("POST", "/api/captions")
        connection.putheader("Content-Type", "image/png")
        connection.putheader("Content-Length", str(size))
        connection.endheaders()
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(tiny_openmoji, serve_processes):
    url = serve_processes.start("--workdir", str(tiny_openmoji["workdir"]))
    yield url
    serve_processes.stop(url)


def q(text: str, **params) -> str:
    return urllib.parse.urlencode({"q": text, **params})


def test_search_gives_the_hits_of_the_cli(server, tiny_openmoji, capsys):
    from teran_es.cli import main

    status, body, _ = call(f"{server}/api/search?{q('red heart', k=5)}")
    assert status == 200
    assert main(["search", "--pipeline", str(tiny_openmoji["workdir"] / "config.toml"), "--set",
                 f"workdir={tiny_openmoji['workdir']}", "--k", "5", "--json", "red", "heart"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert [(h["id"], h["caption"]) for h in body["hits"]] == [(h["id"], h["caption"]) for h in cli["hits"]]
    assert [h["score"] for h in body["hits"]] == pytest.approx([h["score"] for h in cli["hits"]], abs=1e-5)
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3, 4, 5]
    assert "openmoji-2764" in [h["id"] for h in body["hits"]]  # the red heart drawing
    assert set(body["timings"]) == {"encode", "recall", "rerank", "fetch"}
    assert body["candidates"] == cli["candidates"]


def test_exact_search_scores_the_whole_collection(server, tiny_openmoji):
    status, body, _ = call(f"{server}/api/search?{q('a cat', k=3, exact='true')}")
    assert status == 200 and body["exact"] is True
    assert body["candidates"] == 51  # 48 drawings and the three escaping rows
    assert "recall" not in body["timings"]


@pytest.mark.parametrize(
    "params, status, words",
    [
        ({"q": ""}, 422, "at least 1 character"),
        ({"q": "x" * 10_000}, 422, "at most 500 characters"),
        ({"q": "   "}, 400, "empty"),
        ({"q": "heart", "k": 0}, 422, "k:"),
        ({"q": "heart", "k": 101}, 422, "k:"),
        ({"q": "heart", "k": "many"}, 422, "k:"),
        ({"q": "heart", "candidates": 0}, 422, "candidates:"),
        ({"q": "heart", "candidates": 10_001}, 422, "candidates:"),
    ],
)
def test_bad_search_input_gets_a_4xx_with_a_message(server, params, status, words):
    got, body, _ = call(f"{server}/api/search?{urllib.parse.urlencode(params)}")
    assert got == status
    assert body["error"]["status"] == status and words in body["error"]["message"]


def test_a_search_without_q_is_refused(server):
    got, body, _ = call(f"{server}/api/search")
    assert got == 422 and "q:" in body["error"]["message"]


def test_an_image_has_its_captions_and_the_attribution(server):
    status, body, _ = call(f"{server}/api/images/openmoji-2764")
    assert status == 200
    assert "red heart" in body["captions"] and len(body["captions"]) > 1
    assert "OpenMoji" in body["attribution"]


def test_unknown_ids_and_routes_get_404(server):
    for path in ("/api/images/no-such-image", "/api/images/no-such-image/thumbnail",
                 "/api/images/no-such-image/captions", "/api/nothing-here"):
        status, body, _ = call(server + path)
        assert status == 404, path
        assert body["error"]["message"]


def test_a_thumbnail_is_a_png_made_once_and_cached(server, tiny_openmoji):
    from teran_es.web.thumbnails import ThumbnailCache

    cached = ThumbnailCache(tiny_openmoji["workdir"] / "thumbnails").path_for("openmoji-1F431", 128)
    status, first, headers = call(f"{server}/api/images/openmoji-1F431/thumbnail")
    assert status == 200 and headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(first)).size == (128, 128)
    assert cached.read_bytes() == first
    made = cached.stat().st_mtime_ns
    assert call(f"{server}/api/images/openmoji-1F431/thumbnail")[1] == first
    assert cached.stat().st_mtime_ns == made  # served from the cache, not made again
    status, large, _ = call(f"{server}/api/images/openmoji-1F431/thumbnail?size=384")
    assert status == 200 and Image.open(io.BytesIO(large)).size == (384, 384)
    assert call(f"{server}/api/images/openmoji-1F431/thumbnail?size=5000")[0] == 422


@pytest.mark.parametrize("image_id", ["escape-dotdot", "escape-absolute", "escape-symlink"])
def test_image_files_outside_the_collection_are_refused(server, image_id):
    status, body, _ = call(f"{server}/api/images/{image_id}/thumbnail")
    assert status == 403
    assert "outside the collection directory" in body["error"]["message"]


def test_a_path_in_the_id_does_not_escape(server):
    for image_id in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", ".."):
        status, _, _ = call(f"{server}/api/images/{image_id}/thumbnail")
        assert status == 404


def test_alignment_names_each_query_word_with_a_region_and_its_box(server):
    status, body, _ = call(f"{server}/api/images/openmoji-2764/alignment?{q('red heart')}")
    assert status == 200
    assert [w["word"] for w in body["words"]] == ["red", "heart"]
    assert len(body["matrix"]) == 2 and len(body["matrix"][0]) == 16  # 4 x 4 grid regions
    assert len(body["boxes"]) == 16
    for word, row in zip(body["words"], body["matrix"], strict=True):
        assert word["score"] == pytest.approx(max(row))
        assert row[word["region"]] == pytest.approx(max(row))
    # this model has no query bank: the pair's score is MrSw, the words' best values summed, and
    # it is the score the search hit of the drawing carries
    assert body["normaliser"] is None
    assert body["score"] == body["alignment"] == pytest.approx(sum(w["score"] for w in body["words"]), abs=1e-5)
    _, found, _ = call(f"{server}/api/search?{q('red heart', k=5)}")
    hit = next(h for h in found["hits"] if h["id"] == "openmoji-2764")
    assert body["score"] == pytest.approx(hit["score"], abs=1e-4)


def test_captions_for_an_image_of_the_collection(server):
    status, body, _ = call(f"{server}/api/images/openmoji-1F355/captions?k=5")
    assert status == 200
    assert body["captions"] > 100 and len(body["hits"]) == 5
    assert any("pizza" in h["caption"] for h in body["hits"][:3]), body["hits"]
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_captions_for_an_uploaded_drawing(server, tiny_openmoji):
    data = (tiny_openmoji["collection"] / "images" / "1F355.png").read_bytes()
    status, body, _ = call(f"{server}/api/captions?k=3&name=pizza.png", data, {"Content-Type": "image/png"})
    assert status == 200 and body["image"] == "pizza.png"
    _, by_id, _ = call(f"{server}/api/images/openmoji-1F355/captions?k=3")
    # the same drawing, encoded from the file: the captions of the stored regions
    assert [h["caption"] for h in body["hits"]] == [h["caption"] for h in by_id["hits"]]


def test_bad_uploads_get_a_clear_4xx(server):
    from teran_es.web.models import MAX_UPLOAD_BYTES

    status, body, _ = call(f"{server}/api/captions", b"this is not an image at all", {"Content-Type": "image/png"})
    assert status == 415 and "not an image" in body["error"]["message"]
    status, body, _ = call(f"{server}/api/captions", b"", {"Content-Type": "image/png"})
    assert status == 415 and "empty" in body["error"]["message"]
    status, body = declare_upload(server, MAX_UPLOAD_BYTES + 1)
    assert status == 413 and "limit" in body["error"]["message"]
    bomb = png_bytes(size=(9000, 9000), colour=(255, 255, 255))  # 81 Mpixels in a few hundred kB
    assert len(bomb) < MAX_UPLOAD_BYTES
    status, body, _ = call(f"{server}/api/captions", bomb, {"Content-Type": "image/png"})
    assert status == 413 and "pixels" in body["error"]["message"]


def test_health_gives_fingerprints_size_and_backend_state(server, tiny_openmoji):
    from teran_es.store import FeatureStore

    status, body, _ = call(f"{server}/api/health")
    assert status == 200 and body["status"] == "ok"
    assert body["images"] == 51 and body["backend"] == {
        "kind": "embedded", "index": "tiny-openmoji", "state": "ok", "documents": 51, "message": ""
    }
    with FeatureStore.open(tiny_openmoji["workdir"] / "store") as store:
        assert body["model_fingerprint"] == store.model_fingerprint
    assert len(body["quantizer_fingerprint"]) == 64


def test_the_page_and_the_openapi_docs_are_served(server):
    status, page, _ = call(f"{server}/")
    assert status == 200 and b'id="search-form"' in page
    status, script, headers = call(f"{server}/static/app.js")
    assert status == 200 and b"/api/search" in script
    status, schema, _ = call(f"{server}/openapi.json")
    assert status == 200 and "/api/search" in schema["paths"] and "/api/captions" in schema["paths"]
    assert call(f"{server}/docs")[0] == 200


def test_nothing_is_written_outside_the_work_directory(server, tiny_openmoji, serve_processes):
    collection = tiny_openmoji["collection"]
    before = sorted((p.relative_to(collection), p.stat().st_mtime_ns) for p in collection.rglob("*"))
    call(f"{server}/api/captions", png_bytes(), {"Content-Type": "image/png"})
    call(f"{server}/api/images/openmoji-1F408/thumbnail?size=384")
    call(f"{server}/api/search?{q('cat')}")
    assert sorted((p.relative_to(collection), p.stat().st_mtime_ns) for p in collection.rglob("*")) == before
    assert list(serve_processes.tmpdir(server).iterdir()) == []


# -- the demo's own model: EfficientNet-Lite0 regions and a query bank -------------------------


@pytest.fixture(scope="module")
def demo_model_server(tiny_openmoji_demo_model, serve_processes):
    url = serve_processes.start("--workdir", str(tiny_openmoji_demo_model["workdir"]))
    yield url
    serve_processes.stop(url)


def test_with_the_demo_model_a_hits_alignment_has_its_boxes_and_normalised_score(demo_model_server):
    status, found, _ = call(f"{demo_model_server}/api/search?{q('red heart', k=5)}")
    assert status == 200 and found["bank_normalised"]
    assert "openmoji-2764" in [h["id"] for h in found["hits"]]  # the red heart drawing
    for hit in found["hits"]:
        status, view, _ = call(f"{demo_model_server}/api/images/{hit['id']}/alignment?{q('red heart')}")
        assert status == 200, view
        assert [w["word"] for w in view["words"]] == ["red", "heart"]
        assert len(view["boxes"]) == len(view["matrix"][0]) == 16  # the 4 x 4 pooled grid
        assert isinstance(view["normaliser"], float)
        assert view["score"] == pytest.approx(view["alignment"] - view["normaliser"], abs=1e-6)
        assert view["alignment"] == pytest.approx(sum(w["score"] for w in view["words"]), abs=1e-4)
        assert view["score"] == pytest.approx(hit["score"], abs=1e-4)
