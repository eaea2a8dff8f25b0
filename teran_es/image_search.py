"""Search by image: an image of the collection (by id) or an uploaded file in, the collection's
captions that align best with it out. Composes the searcher's model and store with the
caption bank (``caption_search.py``); the bank is built once per work directory."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field

import torch

from teran_es.caption_search import CAPTIONS_FILE, CaptionBank, CaptionBankError, CaptionHit
from teran_es.catalog import Catalog
from teran_es.errors import TeranError
from teran_es.model.checkpoint import model_fingerprint
from teran_es.searcher import Searcher

log = logging.getLogger(__name__)


class UnknownImageError(TeranError, KeyError):
    """An image id that the collection's store does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ImageQueryError(TeranError, ValueError):
    """An image that cannot be searched with (no front end to encode pixels)."""


@dataclass
class CaptionResult:
    image: str  # the id, or the uploaded file's name
    hits: list[CaptionHit]
    captions: int  # captions scanned
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def stored_regions(searcher: Searcher, image_id: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(regions [1, R, D], mask [1, R]) of an ingested image, as the rerank reads them."""
    if image_id not in searcher.store.contains([image_id]):
        raise UnknownImageError(f"no image {image_id!r} in this collection")
    return searcher.store.get_many([image_id])


def pixel_regions(searcher: Searcher, data: bytes, name: str = "upload") -> tuple[torch.Tensor, torch.Tensor]:
    """(regions [1, R, D], mask [1, R]) of an image file's bytes, encoded by the model's front end.

    Raises ImageDecodeError for bytes that are not an image (or too large an image)."""
    from teran_es.encoding import encode_image_records
    from teran_es.features.images import load_image_bytes
    from teran_es.features.pixels import ImageFile

    model = searcher.model
    if model.frontend is None:
        raise ImageQueryError(
            "this collection's model takes region features, not pixels: search by image works with the id "
            "of an image in the collection only"
        )
    pixels = load_image_bytes(data, model.config.image_size, name)
    out = encode_image_records(model, [ImageFile(name, name, pixels=pixels)], searcher.device)
    return out.regions.float().cpu(), out.mask.cpu()


class CaptionSearch:
    """Search by image over one collection; the caption bank is loaded or built on first use."""

    def __init__(self, searcher: Searcher, catalog: Catalog, guard: Callable[[], AbstractContextManager] = nullcontext):
        """``guard``: entered around each use of the model while the bank is built (a server's lock)."""
        self.searcher = searcher
        self.catalog = catalog
        self._guard = guard
        self._bank: CaptionBank | None = None
        self._lock = threading.Lock()

    def bank(self, progress: Callable[[int, int], None] | None = None) -> CaptionBank:
        """The bank, from ``<workdir>/captions.npz`` or encoded now (and saved there)."""
        with self._lock:
            if self._bank is None:
                self._bank = self._load_or_build(progress)
            return self._bank

    def _load_or_build(self, progress: Callable[[int, int], None] | None) -> CaptionBank:
        path = self.searcher.config.resolved_workdir() / CAPTIONS_FILE
        fingerprint = model_fingerprint(self.searcher.model)
        pairs = self.catalog.captions()
        if path.is_file():
            try:
                bank = CaptionBank.load(path, fingerprint)
                if len(bank) == len(pairs) or not pairs:
                    return bank
                log.info("%s holds %d captions, the collection %d: rebuilding", path, len(bank), len(pairs))
            except CaptionBankError as exc:
                log.warning("%s; rebuilding it", exc)
        if not pairs:
            raise CaptionBankError(
                f"no captions to search by image: the collection at data.path={self.searcher.config.data.path!r} "
                "has none (a folder of images without captions, or no collection there)"
            )
        done = [0]

        def step(n: int) -> None:
            done[0] += n
            if progress is not None:
                progress(done[0], len(pairs))

        started = time.perf_counter()
        bank = CaptionBank.build(self.searcher.model, pairs, fingerprint, progress=step, guard=self._guard)
        bank.save(path)
        log.info("encoded %d captions in %.1f s into %s", len(bank), time.perf_counter() - started, path)
        return bank

    def search(self, regions: torch.Tensor, mask: torch.Tensor, k: int, image: str) -> CaptionResult:
        bank = self.bank()
        config = self.searcher.model.config
        hits, seconds = bank.scan(regions, mask, k, kind=config.score, padding=config.padding)
        return CaptionResult(image, hits, len(bank), {"scan": seconds})

    def by_id(self, image_id: str, k: int) -> CaptionResult:
        started = time.perf_counter()
        regions, mask = stored_regions(self.searcher, image_id)
        read = time.perf_counter() - started
        result = self.search(regions, mask, k, image_id)
        result.timings = {"read": read, **result.timings}
        return result

    def by_file(self, data: bytes, k: int, name: str = "upload") -> CaptionResult:
        started = time.perf_counter()
        regions, mask = pixel_regions(self.searcher, data, name)
        encode = time.perf_counter() - started
        result = self.search(regions, mask, k, name)
        result.timings = {"encode": encode, **result.timings}
        return result
