"""How well a model generalises, on the multi-source emoji collection: the three protocols of
benchmarks/bench_generalisation.py, as queries, galleries and relevance, and their recall.

- ``unseen``: the concepts of the test split (never trained on, by any artist). Text ->
  image: each distinct (concept, caption) of a test concept queries the whole collection; any
  drawing of the concept, by any artist, is a hit. Image -> text: each drawing of a test
  concept queries every distinct (concept, caption) of the collection.
- ``heldout``: the held-out artist (Twemoji): its captions query all of its drawings and its
  drawings all of its captions; the hit is the drawing of the caption's concept.
- ``openmoji``: today's protocol on the OpenMoji drawings, for comparison with the
  committed model: the captions of the OpenMoji test split query all OpenMoji drawings (the
  4,081-image collection); the hit is the caption's own drawing. Image -> text on the test
  split alone (its drawings against its captions).

Relevance is by group (a concept, or an image): :func:`group_ranks` is the rank of the best
ranked relevant item, ties broken by index as ``evaluation.py`` breaks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from teran_es.collections.emoji_codes import CONCEPT_KINDS, concept_kind

HELDOUT_SPLIT = "heldout-artist"
MISS = np.iinfo(np.int64).max  # the rank of a query whose list holds no relevant item


def group_ranks(scores: np.ndarray, query_groups: np.ndarray, item_groups: np.ndarray) -> np.ndarray:
    """0-based rank of each query's best-ranked relevant item.

    scores [Q, N] (higher is better), query_groups [Q], item_groups [N] (ints; an item is
    relevant to a query of the same group) -> ranks int64 [Q]. Among equal scores the item
    with the lower index ranks first. Every query needs at least one relevant item.
    """
    scores = np.asarray(scores)
    query_groups, item_groups = np.asarray(query_groups), np.asarray(item_groups)
    if scores.shape != (len(query_groups), len(item_groups)):
        raise ValueError(f"scores {scores.shape} do not fit {len(query_groups)} queries x {len(item_groups)} items")
    ranks = np.empty(len(query_groups), dtype=np.int64)
    index = np.arange(len(item_groups))[None, :]
    for start in range(0, len(query_groups), 256):
        block = scores[start : start + 256]
        relevant = item_groups[None, :] == query_groups[start : start + 256, None]
        if not relevant.any(axis=1).all():
            raise ValueError("a query has no relevant item")
        best = np.where(relevant, block, -np.inf).max(axis=1, keepdims=True)
        first_best = np.argmax(relevant & (block == best), axis=1)[:, None]
        ranks[start : start + len(block)] = (block > best).sum(axis=1) + ((block == best) & (index < first_best)).sum(
            axis=1
        )
    return ranks


def list_ranks(hit_groups: Sequence[Sequence[int]], query_groups: Sequence[int]) -> np.ndarray:
    """0-based position of the first relevant hit in each ranked list; ``MISS`` (a miss at
    every K) when none is relevant."""
    ranks = []
    for hits, group in zip(hit_groups, query_groups, strict=True):
        found = [i for i, g in enumerate(hits) if g == group]
        ranks.append(found[0] if found else MISS)
    return np.asarray(ranks, dtype=np.int64)


def recalls(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@K in percent (rank < K) for each K."""
    return {f"r{k}": round(float(100.0 * np.mean(ranks < k)), 2) if len(ranks) else 0.0 for k in ks}


@dataclass
class Protocol:
    """One evaluation: the gallery (row indices), the text queries with their groups, the
    image queries (row indices) and the texts they rank, with groups on both sides."""

    name: str
    gallery: np.ndarray  # [N] row indices of the images searched
    gallery_groups: np.ndarray  # [N]
    texts: list[str]  # t2i queries
    text_groups: np.ndarray
    image_queries: np.ndarray  # [Qi] row indices of the i2t queries
    image_query_groups: np.ndarray
    text_pool: list[str]  # what the image queries rank
    text_pool_groups: np.ndarray
    text_kinds: list[str]  # the kind of each t2i query's concept (emoji_codes.concept_kind)


def concept_numbers(rows: list[dict]) -> tuple[dict[str, int], np.ndarray]:
    """Each concept's number (its position among the sorted concepts) and each row's concept
    number [N_rows]: the groups every protocol and query set here uses."""
    numbers = {concept: i for i, concept in enumerate(sorted({r["concept"] for r in rows}))}
    return numbers, np.asarray([numbers[r["concept"]] for r in rows], dtype=np.int64)


def query_sample(n_texts: int, queries: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded sample of ``queries`` of ``n_texts`` text queries (0 = all)."""
    if queries <= 0 or queries >= n_texts:
        return np.arange(n_texts)
    return np.sort(np.random.default_rng(seed).choice(n_texts, queries, replace=False))


def _distinct_texts(rows: list[dict], indices, concept_ids: dict[str, int]) -> tuple[list[str], np.ndarray]:
    seen: dict[tuple[int, str], None] = {}
    for i in indices:
        for caption in rows[i]["captions"]:
            seen.setdefault((concept_ids[rows[i]["concept"]], caption), None)
    pairs = list(seen)
    return [text for _, text in pairs], np.asarray([group for group, _ in pairs], dtype=np.int64)


def build_protocols(rows: list[dict]) -> dict[str, Protocol]:
    """The three protocols over the rows of a multi-source collection (emoji_multi.SCHEMA)."""
    concept_ids, concepts = concept_numbers(rows)
    everything = np.arange(len(rows))
    unseen = np.asarray([i for i, r in enumerate(rows) if r["concept_split"] == "test"], dtype=np.int64)
    held = np.asarray([i for i, r in enumerate(rows) if r["split"] == HELDOUT_SPLIT], dtype=np.int64)
    openmoji = np.asarray([i for i, r in enumerate(rows) if r["image_id"].startswith("openmoji-")], dtype=np.int64)
    openmoji_test = np.asarray([i for i in openmoji if rows[i]["split"] == "test"], dtype=np.int64)

    unseen_texts, unseen_groups = _distinct_texts(rows, unseen, concept_ids)
    pool, pool_groups = _distinct_texts(rows, everything, concept_ids)
    held_texts, held_groups = _distinct_texts(rows, held, concept_ids)
    om_texts = [c for i in openmoji_test for c in rows[i]["captions"]]
    om_groups = np.asarray([i for i in openmoji_test for _ in rows[i]["captions"]], dtype=np.int64)
    kind_of_concept = {i: concept_kind(concept) for concept, i in concept_ids.items()}

    def kinds(groups: np.ndarray) -> list[str]:
        return [kind_of_concept[int(g)] for g in groups]

    return {
        "unseen": Protocol("unseen", everything, concepts, unseen_texts, unseen_groups, unseen, concepts[unseen],
                           pool, pool_groups, kinds(unseen_groups)),
        "heldout": Protocol("heldout", held, concepts[held], held_texts, held_groups, held, concepts[held],
                            held_texts, held_groups, kinds(held_groups)),
        # groups are row indices: the hit is the caption's own drawing, as in the OpenMoji benchmark
        "openmoji": Protocol("openmoji", openmoji, openmoji, om_texts, om_groups, openmoji_test, openmoji_test,
                             om_texts, om_groups, kinds(concepts[om_groups])),
    }


def recalls_by_kind(ranks: np.ndarray, kinds: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{kind: {"queries": n, "r1", "r5", "r10"}}`` of the queries of each kind (ranks [Q],
    kinds [Q]), in CONCEPT_KINDS order, kinds without queries left out."""
    kinds = np.asarray(kinds)
    if len(kinds) != len(ranks):
        raise ValueError(f"{len(ranks)} ranks but {len(kinds)} kinds")
    return {kind: {"queries": int((kinds == kind).sum()), **recalls(ranks[kinds == kind])}
            for kind in CONCEPT_KINDS if (kinds == kind).any()}


def concept_queries(rows: list[dict], concept_split: str, limit: int = 0, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Text queries of the concepts of one split, to search the whole collection with:
    each distinct (concept, caption) of a concept whose ``concept_split`` is ``concept_split``
    (``"val"``: concepts used to choose settings; ``"train"``: concepts the model was trained
    on), a seeded sample of ``limit`` of them (0 = all) -> (texts, concept groups [Q]); the
    groups are the concept ids :func:`build_protocols` gives, so the ``unseen`` protocol's
    gallery groups are their relevance."""
    indices = [i for i, r in enumerate(rows) if r["concept_split"] == concept_split]
    texts, groups = _distinct_texts(rows, indices, concept_numbers(rows)[0])
    keep = query_sample(len(texts), limit, seed)
    return [texts[i] for i in keep], groups[keep]


def bank_texts(rows: list[dict], limit: int = 0, seed: int = 0) -> list[str]:
    """The query bank: distinct captions of the rows a model is trained on (split ``train``),
    sorted, or a seeded sample of ``limit`` of them (0 = all). Only train rows contribute: a
    caption of a val or test concept is in it only when a trained concept has it too."""
    texts = sorted({caption for r in rows if r["split"] == "train" for caption in r["captions"]})
    return [texts[i] for i in query_sample(len(texts), limit, seed)]
