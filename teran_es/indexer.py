"""Ingest: images (region features, or pixels) in, feature store and surrogate-text index out.

Images come as :class:`ImageRecord` (precomputed region features) or as
:class:`ImageFile` (a file to decode): a model with an image front end encodes the pixels
itself; a model without one gets region features from the pipeline's torchvision
extractor (``[extractor]``, weights from a file). A file that does not decode is logged to
``skipped.jsonl`` and counted in ``IngestReport.skipped_bad``; the rest goes on.

What the work directory of a pipeline holds is described in ``workdir.py``. Documents
Elasticsearch rejects go to a dead-letter file; ``retry.retry_failed``
(``teran-es ingest --retry-failed``) indexes them again.

Order of writes per batch: feature store first, index second. An interrupted ingest is
resumed by running it again: ids present in both are skipped, ids stored but not yet
indexed are indexed from the store (no re-encoding), the rest is encoded. Document ids are
the image ids, so re-running never duplicates anything. When the model carries a query bank,
the run ends by computing the query-bank normaliser of every stored image that lacks one
(``update_normalisers``), from the stored regions.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

import numpy as np
import torch

from teran_es.bank_normalisers import BankNormalisers
from teran_es.config import PipelineConfig, save_config
from teran_es.device import resolve_device
from teran_es.encoding import encode_image_records
from teran_es.errors import ConfigError
from teran_es.features.images import ImageDecodeError
from teran_es.features.pixels import ImageFile
from teran_es.features.records import ImageRecord, RecordError, validate_record
from teran_es.index import Index, SurrogateDocument, open_index
from teran_es.model.checkpoint import load_checkpoint, model_fingerprint
from teran_es.model.teran import TERAN
from teran_es.normaliser_file import read_fresh_normalisers, write_normalisers
from teran_es.store import FeatureStore
from teran_es.store.wire import pack
from teran_es.surrogate import FirstStageEncoder, fit_encoder
from teran_es.surrogate.terms import parse_region_document_id, region_document_id
from teran_es.workdir import Artifacts, index_meta, open_quantizer, rerank_codes_dtype

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What one ingest run did; ``timings`` split the work into its stages (seconds)."""

    seen: int = 0
    encoded: int = 0
    stored: int = 0
    indexed: int = 0
    skipped_existing: int = 0
    indexed_from_store: int = 0
    skipped_bad: int = 0
    index_failed: int = 0
    dead_letter_path: str | None = None
    quantizer_fitted: bool = False
    total_in_index: int = 0
    total_in_store: int = 0
    normalised: int = 0  # images whose query-bank normaliser this run computed (a model with a bank)
    timings: dict[str, float] = field(
        default_factory=lambda: {"read": 0.0, "encode": 0.0, "store": 0.0, "quantize": 0.0, "index": 0.0,
                                 "normalise": 0.0}
    )

    def to_dict(self) -> dict:
        return asdict(self)


class ShownFields(NamedTuple):
    """What a hit shows of an image whose source record is not at hand (a retried document)."""

    path: str | None
    captions: list[str]


def encode_region_batch(
    model: TERAN, records: list[ImageRecord | ImageFile], device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Region embeddings of a batch of records (region features, or decoded pixels for a
    model with a front end): (float32 [B, R, D], bool [B, R])."""
    out = encode_image_records(model, records, device)
    return out.regions.float().cpu().numpy(), out.mask.cpu().numpy()


def _batched(
    items: Iterable[ImageRecord | ImageFile], size: int
) -> Iterator[list[ImageRecord | ImageFile]]:
    batch: list[ImageRecord | ImageFile] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Ingestor:
    """Composes model, feature store, quantizer and index for one pipeline."""

    def __init__(
        self,
        config: PipelineConfig,
        model: TERAN | None = None,
        device: str | None = None,
        extractor=None,
    ):
        self.config = config
        self.paths = Artifacts(config)
        self.device = resolve_device(device or config.ingest.device)
        if model is None:
            if not config.checkpoint:
                raise ConfigError("the pipeline names no model checkpoint (set `checkpoint` or --checkpoint)")
            model, _, _ = load_checkpoint(config.checkpoint, device=self.device)
        self.model = model.to(self.device).eval()
        self.model_fingerprint = model_fingerprint(self.model)
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.store = FeatureStore.open(
            self.paths.store,
            create=True,
            dim=self.model.config.embed_dim,
            dtype=config.store.dtype,
            model_fingerprint=self.model_fingerprint,
            shard_size=config.store.shard_size,
        )
        self.quantizer: FirstStageEncoder | None = None
        if self.paths.quantizer.exists():
            self.quantizer = open_quantizer(config, self.paths.quantizer, self.model_fingerprint)
        self.index: Index | None = None
        # the store dtype whose codes each document carries (store.location="elasticsearch"), or None
        self.codes_dtype = rerank_codes_dtype(config)
        self._bad_items = 0  # items skipped with a logged reason during the current ingest
        # region features for images given as files, when the model has no front end;
        # built from config.extractor on first need (loading its weights takes a while)
        self._extractor = extractor

    # -- helpers ---------------------------------------------------------------------------

    def writable_index(self) -> Index:
        """The pipeline's index, opened (and created when missing) on first use; needs the quantizer."""
        if self.index is None:
            assert self.quantizer is not None
            self.index = open_index(
                self.config, create=True, meta=self.index_meta()
            )
            if self.codes_dtype and self.index.meta().get("rerank_codes") != self.codes_dtype:
                raise ConfigError(
                    f"store.location=elasticsearch, but index {self.config.resolved_index_name()!r} carries no "
                    f"{self.codes_dtype} rerank codes: run `teran-es ingest --rebuild` to add them"
                )
        return self.index

    def index_meta(self) -> dict:
        """What the pipeline's index records: fingerprints, and the dtype of its rerank codes."""
        assert self.quantizer is not None
        return index_meta(self.quantizer, self.model_fingerprint, self.codes_dtype)

    def _log_skipped(self, item_id: str | None, reason: str) -> None:
        self._bad_items += 1
        with self.paths.skipped.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"id": item_id, "reason": reason, "time": time.time()}) + "\n")

    def note_bad_record(self, error: RecordError) -> None:
        """For the readers' ``on_error``: record a skipped item and its reason in skipped.jsonl."""
        self._log_skipped(error.image_id, str(error))

    def _extractor_for_files(self):
        if self._extractor is None:
            from teran_es.features.extractors import build_extractor

            self._extractor = build_extractor(self.config.extractor, self.device)
            if self._extractor is None:
                raise ConfigError(
                    "these images come as files, but the model has no image front end (model.frontend) "
                    "and the pipeline names no region-feature extractor ([extractor] kind and weights)"
                )
        if self._extractor.feature_dim != self.model.config.region_feature_dim:
            raise ConfigError(
                f"the extractor gives {self._extractor.feature_dim}-d region features but the model "
                f"takes {self.model.config.region_feature_dim}-d ones"
            )
        return self._extractor

    def _encodable(self, items: list[ImageRecord | ImageFile]) -> list[ImageRecord | ImageFile]:
        """The items ready to encode: files decoded (pixels for the front end, or region
        features from the extractor); those that do not decode are logged and left out."""
        files = [item for item in items if isinstance(item, ImageFile)]
        if not files:
            return items
        frontend = self.model.frontend is not None
        size = self.model.config.image_size if frontend else self._extractor_for_files().image_size
        ready: dict[str, ImageFile | ImageRecord] = {}
        for item in files:
            try:
                ready[item.image_id] = item.decoded(size)
            except ImageDecodeError as exc:
                log.warning("skipping %s", exc)
                self._log_skipped(item.image_id, str(exc))
        if not frontend and ready:
            decoded = list(ready.values())
            extracted = self._extractor_for_files().extract([f.pixels for f in decoded], list(ready))
            for source, record in zip(decoded, extracted, strict=True):
                record.captions, record.split, record.path = list(source.captions), source.split, source.path
                try:
                    ready[record.image_id] = validate_record(record, source.path)
                except RecordError as exc:
                    del ready[record.image_id]
                    self._log_skipped(record.image_id, str(exc))
        return [
            ready[item.image_id] if isinstance(item, ImageFile) else item
            for item in items
            if not isinstance(item, ImageFile) or item.image_id in ready
        ]

    def _fit_quantizer(self, regions: np.ndarray, mask: np.ndarray) -> None:
        log.info("fitting the %s first stage on %d images", self.config.quantizer.kind, regions.shape[0])
        self.quantizer = fit_encoder(
            regions, self.config.quantizer, mask=mask, model_fingerprint=self.model_fingerprint
        )
        self.quantizer.save(self.paths.quantizer)
        # the model section written is the model that ingested (the checkpoint's own), not the
        # pipeline's, which a checkpoint's config overrides and may not match (e.g. the demo's)
        save_config(replace(self.config, model=replace(self.model.config)), self.paths.config)

    def _documents(
        self,
        ids: list[str],
        regions: np.ndarray,
        mask: np.ndarray,
        records: dict[str, ImageRecord] | dict[str, ShownFields],
    ) -> list[SurrogateDocument]:
        assert self.quantizer is not None
        batch = self.quantizer.encode_images(regions, mask)
        doc_ids = batch.ids(ids)
        packed = self._packed_codes(ids) if self.codes_dtype else None
        docs = []
        for doc_id, row, terms in zip(
            doc_ids, batch.image_rows.tolist(), self.quantizer.term_dicts(batch.encoding), strict=True
        ):
            if not terms:
                continue  # nothing survived quantisation: such an image can only be found by --exact
            rec = records.get(ids[row])
            docs.append(
                SurrogateDocument(
                    id=doc_id,
                    terms=terms,
                    path=rec.path if rec is not None else None,
                    caption=rec.captions[0] if rec is not None and rec.captions else None,
                    metadata={"image_id": ids[row]},
                    field=self.quantizer.index_field,
                    rerank_codes=packed[row] if packed is not None else None,
                )
            )
        return docs

    def _packed_codes(self, ids: list[str]) -> list[str]:
        """Each image's stored codes as the text its document carries (``store.wire.pack``)."""
        assert self.codes_dtype is not None
        codes, scales, mask = self.store.get_codes(ids)
        counts = mask.sum(dim=1).tolist()
        return [
            pack(codes[i].numpy(), None if scales is None else scales[i].numpy(), counts[i], self.codes_dtype)
            for i in range(len(ids))
        ]

    # -- the run ---------------------------------------------------------------------------

    def ingest(
        self, records: Iterable[ImageRecord | ImageFile], batch_size: int = 64, progress=None
    ) -> IngestReport:
        """Ingest a stream of records (see the module docstring for resume semantics and for
        images given as files).

        Documents are built from the regions as stored (after the store's dtype rounding),
        so the index and the rerank see the same vectors.
        """
        report = IngestReport()
        self._bad_items = 0
        # Until the quantizer exists nothing is indexed: stored images wait here to be fitted on.
        fit_images = max(1, self.config.quantizer.sample_size // max(1, self.config.data.max_regions))
        waiting: dict[str, ImageRecord] = {}
        t0 = time.perf_counter()
        for batch in _batched(records, batch_size):
            report.timings["read"] += time.perf_counter() - t0
            report.seen += len(batch)
            by_id = {r.image_id: r for r in batch}
            ids = list(by_id)
            in_store = self.store.contains(ids)
            in_index: set[str] = set()
            if self.quantizer is not None:
                found = self.writable_index().existing_ids(self._probe_ids(ids))
                in_index = self._image_ids_of(found)
            to_encode = [i for i in ids if i not in in_store]
            report.skipped_existing += sum(1 for i in ids if i in in_store and i in in_index)
            report.indexed_from_store += sum(1 for i in ids if i in in_store and i not in in_index)
            if to_encode:
                t = time.perf_counter()
                ready = self._encodable([by_id[i] for i in to_encode])
                report.timings["read"] += time.perf_counter() - t
                bad = set(to_encode) - {r.image_id for r in ready}
                to_encode = [r.image_id for r in ready]
                ids = [i for i in ids if i not in bad]
            if to_encode:
                t = time.perf_counter()
                regions, mask = encode_region_batch(self.model, ready, self.device)
                report.timings["encode"] += time.perf_counter() - t
                report.encoded += len(to_encode)
                t = time.perf_counter()
                report.stored += self.store.add(to_encode, regions, mask).added
                report.timings["store"] += time.perf_counter() - t
            waiting.update((i, by_id[i]) for i in ids if i not in in_index)
            if self.quantizer is None and len(waiting) >= fit_images:
                self._fit_on(list(waiting))
                report.quantizer_fitted = True
            if self.quantizer is not None and waiting:
                self.index_stored(waiting, report)
                waiting = {}
            if progress is not None:
                progress.update(len(batch))
            t0 = time.perf_counter()
        if waiting and self.quantizer is None:
            self._fit_on(list(waiting))
            report.quantizer_fitted = True
        if waiting:
            self.index_stored(waiting, report)
        self.store.flush()
        t = time.perf_counter()
        report.normalised = self.update_normalisers()
        report.timings["normalise"] += time.perf_counter() - t
        if self.quantizer is not None:
            index = self.writable_index()
            index.refresh()
            report.total_in_index = index.count()
        report.total_in_store = len(self.store)
        report.skipped_bad = self._bad_items
        return report

    def update_normalisers(self) -> int:
        """Bring ``<workdir>/bank_normalisers.parquet`` up to date with the store when the model
        carries a query bank: compute the normalisers of stored images it lacks, drop those of
        images no longer stored, and write it (atomically). A file of another model or bank, or
        one that does not read, is recomputed. Returns how many normalisers were computed."""
        bank = self.model.query_bank
        path = self.paths.normalisers
        if bank is None:
            return 0
        saved, unusable = read_fresh_normalisers(path, self.model_fingerprint, bank.fingerprint)
        if unusable:
            log.warning("recomputing the bank normalisers: %s", unusable)
        fresh = saved is not None
        known = saved or {}
        normalisers = BankNormalisers(self.model, bank, known)
        stored = self.store.ids()
        computed = normalisers.ensure(stored, self.store, batch_size=self.config.search.batch_size)
        if computed:
            log.info("computed the query-bank normalisers of %d images (%d bank texts)", computed, len(bank.texts))
        live = set(stored)
        values = {i: v for i, v in normalisers.values.items() if i in live}
        if not fresh or values != known:
            write_normalisers(path, self.model_fingerprint, bank.fingerprint, values)
        return computed

    def _probe_ids(self, ids: list[str]) -> list[str]:
        """Document ids that prove an image is indexed (its first region for pooling="region")."""
        assert self.quantizer is not None
        if self.quantizer.region_documents:
            return [region_document_id(i, 0) for i in ids]
        return ids

    def _image_ids_of(self, doc_ids: Iterable[str]) -> set[str]:
        assert self.quantizer is not None
        if self.quantizer.region_documents:
            return {parse_region_document_id(i)[0] for i in doc_ids}
        return set(doc_ids)

    def _fit_on(self, ids: list[str]) -> None:
        regions, mask = self.store.get_many(ids)
        self._fit_quantizer(regions.numpy(), mask.numpy())

    def index_stored(
        self, records: dict[str, ImageRecord] | dict[str, ShownFields], report: IngestReport, chunk: int = 512
    ) -> None:
        """Index the images ``records`` names from their stored regions, counting into ``report``.

        ``records`` gives what each hit shows (path, first caption); the regions come from the
        feature store, so every id must be stored.
        """
        ids = list(records)
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            regions, mask = self.store.get_many(part)
            t = time.perf_counter()
            docs = self._documents(part, regions.numpy(), mask.numpy(), records)
            report.timings["quantize"] += time.perf_counter() - t
            t = time.perf_counter()
            result = self.writable_index().add(docs)
            report.timings["index"] += time.perf_counter() - t
            report.index_failed += result.failed
            report.indexed += (
                len({d.metadata["image_id"] for d in docs}) if not result.failed else result.indexed
            )
            if result.dead_letter_path:
                report.dead_letter_path = result.dead_letter_path

    def close(self) -> None:
        self.store.close()
        if self.index is not None:
            self.index.close()

    def __enter__(self) -> Ingestor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
