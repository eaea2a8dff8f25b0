"""The HTTP layer (FastAPI): routes, input limits, and library errors as JSON with a status code.

No search logic here: every route calls one method of :class:`~teran_es.web.service.SearchService`.
Errors are ``{"error": {"status": ..., "message": ...}}``:

    400  a query with nothing to search (empty, only unknown characters), an image the model cannot take
    403  an image file outside the collection's directory
    404  an unknown image id or route
    409  search by image on a collection without captions
    413  an upload over the size limit, or an image with too many pixels (decompression bomb)
    415  an upload that is not an image
    422  a parameter out of range (query length, k, candidates, thumbnail size)
    503  the index (Elasticsearch) cannot be reached; the next request tries again
"""

from __future__ import annotations

import importlib.resources
import logging
from typing import Annotated

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from teran_es.caption_search import CaptionBankError
from teran_es.catalog import UnsafePathError
from teran_es.errors import TeranError
from teran_es.features.images import ImageDecodeError
from teran_es.image_search import CaptionResult, ImageQueryError, UnknownImageError
from teran_es.index import IndexUnavailableError
from teran_es.searcher import QueryError
from teran_es.web import models
from teran_es.web.service import SearchService

log = logging.getLogger(__name__)

STATIC = importlib.resources.files("teran_es.web") / "static"

QueryText = Annotated[
    str, Query(min_length=1, max_length=models.MAX_QUERY_CHARS, description="the words to search for")
]
K = Annotated[int, Query(ge=1, le=models.MAX_K, description="hits to return")]
Candidates = Annotated[
    int | None, Query(ge=1, le=models.MAX_CANDIDATES, description="images recalled and reranked")
]
ImageId = Annotated[str, Path(min_length=1, max_length=512)]


class UploadTooLarge(TeranError, ValueError):
    pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


def _status_of(exc: Exception) -> int:
    if isinstance(exc, UnknownImageError):
        return 404
    if isinstance(exc, UnsafePathError):
        return 403
    if isinstance(exc, IndexUnavailableError):
        return 503
    if isinstance(exc, UploadTooLarge):
        return 413
    if isinstance(exc, ImageDecodeError):
        return 413 if ("pixels is more than" in exc.problem or "too large" in exc.problem) else 415
    if isinstance(exc, CaptionBankError):
        return 409
    if isinstance(exc, QueryError | ImageQueryError):
        return 400
    return 500


def thumbnail_url(image_id: str, size: int = models.THUMBNAIL_SIZES[0]) -> str:
    from urllib.parse import quote

    return f"/api/images/{quote(image_id, safe='')}/thumbnail?size={size}"


def _caption_response(result: CaptionResult) -> models.CaptionSearchResponse:
    return models.CaptionSearchResponse(
        image=result.image,
        captions=result.captions,
        hits=[
            models.CaptionHitModel(
                rank=rank, image_id=h.image_id, caption=h.caption, score=h.score, thumbnail=thumbnail_url(h.image_id)
            )
            for rank, h in enumerate(result.hits, 1)
        ],
        timings=result.timings,
    )


def create_app(service: SearchService) -> FastAPI:
    app = FastAPI(
        title="teran-es",
        description="Cross-modal image search: words -> images (TERAN alignment), images -> captions.",
        version="1",
        responses={code: {"model": models.ErrorResponse} for code in (400, 404, 422, 503)},
    )
    app.state.service = service

    @app.exception_handler(TeranError)
    async def library_error(request: Request, exc: TeranError) -> JSONResponse:
        status = _status_of(exc)
        if status == 500:
            log.error("error on %s: %s", request.url.path, exc)
        return _error(status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body"))
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if exc.status_code != 404 else f"nothing at {request.url.path}"
        return _error(exc.status_code, str(message))

    @app.get("/api/search", response_model=models.SearchResponse)
    def search(
        q: QueryText, k: K = 10, candidates: Candidates = None, exact: bool = False
    ) -> models.SearchResponse:
        """Text -> images: recall candidates from the index, rerank them exactly (or scan all with exact)."""
        result = service.search(q, k, candidates, exact)
        return models.SearchResponse(
            query=result.query,
            k=k,
            candidates=result.candidates,
            exact=exact,
            hits=[
                models.SearchHit(
                    rank=rank, id=h.id, score=h.score, path=h.path, caption=h.caption, thumbnail=thumbnail_url(h.id)
                )
                for rank, h in enumerate(result.hits, 1)
            ],
            timings=result.timings,
            message=result.message,
            bank_normalised=result.bank_normalised,
        )

    @app.get("/api/images/{image_id}", response_model=models.ImageResponse)
    def image(image_id: ImageId) -> models.ImageResponse:
        """An image's metadata and captions."""
        info = service.image(image_id)
        return models.ImageResponse(
            id=info.id,
            captions=info.captions,
            split=info.split,
            path=info.path,
            thumbnail=thumbnail_url(info.id),
            image=thumbnail_url(info.id, models.THUMBNAIL_SIZES[-1]),
            attribution=service.catalog.attribution,
        )

    @app.get("/api/images/{image_id}/thumbnail", response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    def thumbnail(image_id: ImageId, size: int = Query(models.THUMBNAIL_SIZES[0])) -> Response:
        """A PNG thumbnail (made once, then cached in the work directory)."""
        if size not in models.THUMBNAIL_SIZES:
            return _error(422, f"size: one of {', '.join(map(str, models.THUMBNAIL_SIZES))}")
        data = service.thumbnail(image_id, size)
        return Response(data, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/api/images/{image_id}/alignment", response_model=models.AlignmentResponse)
    def alignment(image_id: ImageId, q: QueryText) -> models.AlignmentResponse:
        """Which word of the query aligns best with which region of the image."""
        view = service.alignment(q, image_id)
        return models.AlignmentResponse(
            query=view.query,
            image_id=view.image_id,
            words=[models.WordRegion(word=w.word, region=w.region, score=w.score) for w in view.words],
            matrix=view.matrix,
            boxes=view.boxes,
            alignment=view.alignment,
            normaliser=view.normaliser,
            score=view.score,
        )

    @app.get("/api/images/{image_id}/captions", response_model=models.CaptionSearchResponse)
    def captions_for_image(image_id: ImageId, k: K = 10) -> models.CaptionSearchResponse:
        """Image -> captions: the collection's captions best aligned with this image (exact scan)."""
        return _caption_response(service.captions_for_id(image_id, k))

    @app.post("/api/captions", response_model=models.CaptionSearchResponse)
    async def captions_for_upload(
        request: Request, k: K = 10, name: str = Query("upload", max_length=200)
    ) -> models.CaptionSearchResponse:
        """Image -> captions for an uploaded image: the request body is the image file's bytes."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > models.MAX_UPLOAD_BYTES:
            raise UploadTooLarge(f"the upload is {int(declared):,} bytes; the limit is {models.MAX_UPLOAD_BYTES:,}")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > models.MAX_UPLOAD_BYTES:
                raise UploadTooLarge(f"the upload is over the limit of {models.MAX_UPLOAD_BYTES:,} bytes")
        from starlette.concurrency import run_in_threadpool

        result = await run_in_threadpool(service.captions_for_file, bytes(body), k, name)
        return _caption_response(result)

    @app.get("/api/health", response_model=models.HealthResponse, responses={503: {"model": models.HealthResponse}})
    def health() -> JSONResponse:
        """Fingerprints, collection size and the index's state (503 while the index is unreachable)."""
        h = service.health()
        body = models.HealthResponse(
            status="ok" if h.healthy else "degraded",
            model_fingerprint=h.model_fingerprint,
            quantizer_fingerprint=h.quantizer_fingerprint,
            images=h.images,
            captions=h.captions,
            backend=models.BackendHealth(
                kind=h.backend, index=h.index, state=h.state, documents=h.documents, message=h.message
            ),
            attribution=h.attribution,
        )
        return JSONResponse(body.model_dump(), status_code=200 if h.healthy else 503)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app
