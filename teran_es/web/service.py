"""What the server does, without HTTP: the library's searcher, the collection's catalog, search
by image and thumbnails of one work directory, behind one lock.

One lock serialises the model, the store and the index across the server's worker threads
(none of them is documented as thread-safe, and a fast tokenizer is not); the page's requests
are short, so they queue. Encoding the captions for search by image takes it per batch.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from teran_es.alignment_view import AlignmentView, word_region_alignment
from teran_es.catalog import Catalog, ImageInfo, UnsafePathError, contained_path
from teran_es.config import PipelineConfig
from teran_es.image_search import CaptionResult, CaptionSearch, UnknownImageError
from teran_es.index import IndexUnavailableError
from teran_es.searcher import Searcher, SearchResult
from teran_es.surrogate.terms import region_document_id
from teran_es.web.thumbnails import ThumbnailCache

log = logging.getLogger(__name__)


@dataclass
class Health:
    healthy: bool
    model_fingerprint: str
    quantizer_fingerprint: str
    images: int
    captions: int
    backend: str
    index: str
    state: str
    documents: int | None
    message: str
    attribution: str | None


class SearchService:
    def __init__(self, searcher: Searcher, catalog: Catalog):
        self.searcher = searcher
        self.catalog = catalog
        # re-entrant: a caption request that has to build the bank takes it again per batch
        self._lock = threading.RLock()
        self.captions = CaptionSearch(searcher, catalog, guard=lambda: self._lock)
        self.thumbnails = ThumbnailCache(searcher.config.resolved_workdir() / "thumbnails")
        self._caption_count = len(catalog.captions())

    @classmethod
    def open(cls, config: PipelineConfig, device: str | None = None) -> SearchService:
        searcher = Searcher.open(config, device=device)
        try:
            return cls(searcher, Catalog.open(config))
        except BaseException:
            searcher.close()
            raise

    @property
    def config(self) -> PipelineConfig:
        return self.searcher.config

    # -- text -> images ------------------------------------------------------------------------

    def search(self, text: str, k: int, candidates: int | None, exact: bool) -> SearchResult:
        with self._lock:
            return self.searcher.search(text, k=k, candidates=candidates, exact=exact)

    def alignment(self, text: str, image_id: str) -> AlignmentView:
        with self._lock:
            return word_region_alignment(self.searcher, text, image_id)

    # -- images --------------------------------------------------------------------------------

    def image(self, image_id: str) -> ImageInfo:
        """The catalog's record of an ingested image, or what the index shows of it."""
        with self._lock:
            if image_id not in self.searcher.store.contains([image_id]):
                raise UnknownImageError(f"no image {image_id!r} in this collection")
            info = self.catalog.get(image_id)
            if info is not None:
                return info
            doc_id = region_document_id(image_id, 0) if self.searcher.quantizer.region_documents else image_id
            doc = self.searcher.index.get_many([doc_id]).get(doc_id)
        captions = [doc.caption] if doc is not None and doc.caption else []
        return ImageInfo(image_id, doc.path if doc is not None else None, captions)

    def image_file(self, image_id: str) -> Path:
        """The image's file, checked to lie inside the collection's directory."""
        info = self.image(image_id)
        if not info.path:
            raise UnknownImageError(f"the collection records no file for image {image_id!r}")
        if self.catalog.root is None:
            raise UnsafePathError(
                f"image {image_id!r} names a file, but the pipeline's data.path names no collection "
                "directory to serve files from"
            )
        return contained_path(info.path, self.catalog.root)

    def thumbnail(self, image_id: str, size: int) -> bytes:
        return self.thumbnails.get(image_id, self.image_file(image_id), size)

    # -- image -> captions ---------------------------------------------------------------------

    def captions_for_id(self, image_id: str, k: int) -> CaptionResult:
        self.captions.bank()  # a first call encodes the captions, outside the lock
        with self._lock:
            return self.captions.by_id(image_id, k)

    def captions_for_file(self, data: bytes, k: int, name: str) -> CaptionResult:
        self.captions.bank()
        with self._lock:
            return self.captions.by_file(data, k, name)

    # -- health --------------------------------------------------------------------------------

    def health(self) -> Health:
        state, documents, message = "ok", None, ""
        with self._lock:
            try:
                documents = self.searcher.index.count()
            except IndexUnavailableError as exc:
                state, message = "unavailable", str(exc)
            images = len(self.searcher.store)
        meta = self.searcher.index.meta()
        return Health(
            healthy=state == "ok",
            model_fingerprint=str(meta.get("model_fingerprint", "")),
            quantizer_fingerprint=str(meta.get("quantizer_fingerprint", "")),
            images=images,
            captions=self._caption_count,
            backend=self.config.index.backend,
            index=self.searcher.index.name,
            state=state,
            documents=documents,
            message=message,
            attribution=self.catalog.attribution,
        )

    def close(self) -> None:
        self.searcher.close()
