"""Search: text -> word embeddings -> query terms -> candidates -> exact rerank -> hits.

When the model carries a query bank (``model/bank.py``) and ``search.bank_norm`` is on, the
rerank ranks by the alignment score less each image's bank normaliser, and hits carry that.

The searcher does not care which backend it gets: anything with the ``Index`` protocol.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import torch

from teran_es.bank_normalisers import BankNormalisers
from teran_es.config import PipelineConfig
from teran_es.device import resolve_device
from teran_es.errors import ConfigError, TeranError
from teran_es.index import Index, IndexHit, IndexMismatchError, open_index
from teran_es.index.base import Query
from teran_es.model.checkpoint import load_checkpoint, model_fingerprint
from teran_es.model.teran import TERAN
from teran_es.normaliser_file import read_fresh_normalisers
from teran_es.rerank import RegionSource, rerank_exact
from teran_es.store import FeatureStore
from teran_es.store.fetched import FetchedRegions
from teran_es.surrogate import FirstStageEncoder, group_region_hits
from teran_es.surrogate.terms import region_document_id, region_hits_needed
from teran_es.workdir import Artifacts, WorkdirNotFoundError, index_meta, open_quantizer, rerank_codes_dtype

log = logging.getLogger(__name__)


class QueryError(TeranError, ValueError):
    """A query that cannot be searched (empty, nothing the text model knows)."""


@dataclass(frozen=True)
class Hit:
    """One result: the image id, its exact alignment score (less its query-bank normaliser when
    the search applies one), and what to show."""

    id: str
    score: float
    path: str | None = None
    caption: str | None = None


@dataclass
class SearchResult:
    query: str
    hits: list[Hit]
    candidates: int  # images reranked
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    message: str = ""  # why there are no hits, when there are none
    # True when the scores are the alignment less each image's query-bank normaliser
    bank_normalised: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class Searcher:
    """Holds the model, quantizer, feature store and index of one ingested collection."""

    def __init__(
        self,
        config: PipelineConfig,
        model: TERAN,
        quantizer: FirstStageEncoder,
        store: FeatureStore,
        index: Index,
        device: torch.device,
    ):
        self.config = config
        self.model = model
        self.quantizer = quantizer
        self.store = store
        self.index = index
        self.device = device
        # store.location="elasticsearch": the rerank reads the codes fetched with the candidates
        self.codes_dtype = rerank_codes_dtype(config)
        self.normalisers = self._open_normalisers()

    def _open_normalisers(self) -> BankNormalisers | None:
        """The images' query-bank normalisers when the model carries a bank and ``search.bank_norm``
        is on: those ingest stored, when they were made for this model and bank; any missing
        are computed when a query first needs them."""
        bank = getattr(self.model, "query_bank", None)
        if bank is None or not self.config.search.bank_norm:
            return None
        # the store's fingerprint is the model's: Searcher.open refuses a store of another model
        saved, unusable = read_fresh_normalisers(Artifacts(self.config).normalisers, self.store.model_fingerprint,
                                                 bank.fingerprint)
        if unusable:
            log.warning("%s: run `teran-es ingest` again to recompute them; meanwhile they are computed as "
                        "queries need them", unusable)
        return BankNormalisers(self.model, bank, saved)

    @classmethod
    def open(cls, config: PipelineConfig, model: TERAN | None = None, device: str | None = None) -> Searcher:
        """Open what ``teran-es ingest`` built for this pipeline; refuse artifacts of another model."""
        paths = Artifacts(config)
        dev = resolve_device(device or config.search.device)
        if not paths.quantizer.exists():
            raise WorkdirNotFoundError(
                f"nothing ingested for pipeline {config.name!r} yet ({paths.quantizer} is missing): "
                "run `teran-es ingest` first"
            )
        if model is None:
            if not config.checkpoint:
                raise ConfigError("the pipeline names no model checkpoint (set `checkpoint` or --checkpoint)")
            model, _, _ = load_checkpoint(config.checkpoint, device=dev)
        model = model.to(dev).eval()
        fingerprint = model_fingerprint(model)
        quantizer = open_quantizer(config, paths.quantizer, fingerprint)
        # Both raise a clear mismatch error when the collection was built by another model.
        store = FeatureStore.open(paths.store, model_fingerprint=fingerprint)
        index = open_index(config, create=False, meta=index_meta(quantizer, fingerprint), read_only=True)
        if not index.meta().get("model_fingerprint"):
            raise IndexMismatchError(
                f"index {config.resolved_index_name()!r} records no model fingerprint; re-ingest it"
            )
        codes = rerank_codes_dtype(config)
        if codes and index.meta().get("rerank_codes") != codes:
            index.close()
            store.close()
            raise IndexMismatchError(
                f"store.location=elasticsearch, but index {config.resolved_index_name()!r} carries "
                f"{index.meta().get('rerank_codes') or 'no'} rerank codes, not {codes}: rebuild it with "
                "`teran-es ingest --rebuild` (same settings), or search with store.location=local"
            )
        return cls(config, model, quantizer, store, index, dev)

    # -- query encoding --------------------------------------------------------------------

    def encode_query(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Word vectors of one query: (float [1, W, D], bool mask [1, W]); raises QueryError."""
        if not isinstance(text, str) or not text.strip():
            raise QueryError("the query is empty: type a few words")
        tokens = self.model.tokenize([text])
        ids = tokens["input_ids"][0][tokens["attention_mask"][0].bool()]
        tokenizer = self.model.tokenizer
        special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
        content = [int(t) for t in ids if int(t) not in special]
        if not content or all(t == tokenizer.unk_token_id for t in content):
            raise QueryError(
                f"nothing in the query {text!r} is known to the text model (only unknown characters)"
            )
        with torch.inference_mode():
            out = self.model.encode_texts(
                tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
            )
        if not bool(out.mask.any()):
            raise QueryError(f"the query {text!r} has no words left to score")
        return out.words.float(), out.mask

    def first_stage_query(self, words: torch.Tensor, mask: torch.Tensor) -> Query:
        """The index query of one sentence's word vectors (float [1, W, D], bool [1, W])."""
        return self.quantizer.query(words[0].cpu().numpy(), mask[0].cpu().numpy())

    # -- search ----------------------------------------------------------------------------

    def candidates(self, query: Query, n: int) -> list[IndexHit]:
        """First stage: up to ``n`` candidate images from the index (region hits grouped)."""
        if not self.quantizer.region_documents:
            return self.index.search(query, n)
        # k images may need up to k * R region documents; over-fetch, then group by image.
        hits = self.index.search(query, region_hits_needed(n, self.config.data.max_regions))
        return [IndexHit(i, s) for i, s in group_region_hits(((h.id, h.score) for h in hits), k=n)]

    def search(
        self, text: str, k: int | None = None, candidates: int | None = None, exact: bool = False
    ) -> SearchResult:
        """The top ``k`` images for ``text``: recall ``candidates`` from the index, then rerank exactly.

        ``exact=True`` skips the index and scores the whole collection (the brute-force scan).
        """
        k = self.config.search.k if k is None else k
        n_candidates = self.config.search.candidates if candidates is None else candidates
        if k < 1 or n_candidates < 1:
            raise QueryError("k and candidates must be at least 1")
        timings: dict[str, float] = {}
        t = time.perf_counter()
        words, mask = self.encode_query(text)
        timings["encode"] = time.perf_counter() - t
        regions: RegionSource = self.store
        if exact:
            candidate_ids = None
            reranked = len(self.store)
        else:
            t = time.perf_counter()
            query = self.first_stage_query(words, mask)
            if not query:
                raise QueryError(f"the query {text!r} gives no surrogate terms")
            if self.codes_dtype:
                first, packed = self.index.search_with_codes(query, max(n_candidates, k))
                regions = FetchedRegions(packed, self.model.config.embed_dim, self.codes_dtype)
            else:
                first = self.candidates(query, max(n_candidates, k))
            timings["recall"] = time.perf_counter() - t
            candidate_ids = [h.id for h in first]
            reranked = len(candidate_ids)
            if not candidate_ids:
                return SearchResult(
                    query=text,
                    hits=[],
                    candidates=0,
                    timings=timings,
                    message=(
                        f"no indexed image holds any of the cells or terms the words of {text!r} probe; "
                        "search with --exact, or probe more cells (--set quantizer.nprobe=...)"
                    ),
                )
        offsets = None
        if self.normalisers is not None:
            t = time.perf_counter()
            computed = self.normalisers.ensure(
                self.store.ids() if candidate_ids is None else candidate_ids, regions, self.config.search.batch_size
            )
            if computed:
                timings["normalise"] = time.perf_counter() - t
                log.info("computed the query-bank normalisers of %d images not in %s", computed,
                         Artifacts(self.config).normalisers)
            offsets = self.normalisers.values
        t = time.perf_counter()
        scored = rerank_exact(
            words,
            mask,
            regions,
            candidate_ids,
            k,
            kind=self.model.config.score,
            padding=self.model.config.padding,
            device=self.device,
            batch_size=self.config.search.batch_size,
            offsets=offsets,
        )[0]
        timings["rerank"] = time.perf_counter() - t
        t = time.perf_counter()
        hits = self._hits([(s.id, s.score) for s in scored])
        timings["fetch"] = time.perf_counter() - t
        return SearchResult(query=text, hits=hits, candidates=reranked, timings=timings,
                            bank_normalised=offsets is not None)

    def _hits(self, scored: list[tuple[str, float]]) -> list[Hit]:
        """Hits with what they show, read from the index in one lookup."""
        def doc_id(image_id: str) -> str:
            return region_document_id(image_id, 0) if self.quantizer.region_documents else image_id

        docs = self.index.get_many([doc_id(image_id) for image_id, _ in scored])
        hits = []
        for image_id, score in scored:
            doc = docs.get(doc_id(image_id))
            hits.append(Hit(image_id, score, doc.path if doc else None, doc.caption if doc else None))
        return hits

    def close(self) -> None:
        self.store.close()
        self.index.close()


def recall_at(found: list[str], exact: list[str]) -> float:
    """Fraction of the exact top list that the pipeline's list holds (order ignored)."""
    if not exact:
        return 1.0
    return len(set(found) & set(exact)) / len(exact)
