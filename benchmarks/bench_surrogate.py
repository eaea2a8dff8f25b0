"""Recall of the surrogate-text first stage against exact MrSw, on seeded synthetic data.

Data: clustered unit vectors with a shared mean direction (as real embeddings have). Each
image holds a few concepts and its regions are noisy copies of them (plus background
regions); each query is built for one target image: content words are noisy copies of its
concepts, function words are noisy copies of a few shared "stop word" vectors.

For each quantizer setting: fit on the first images, encode every image (pooling max, sum, or
one document per region grouped back by max) and every query, score by the sparse dot product
(what Elasticsearch's sparse_vector query computes), and report recall@10 of the exact MrSw
top-10 among the top-C first-stage candidates. Images with score 0 never become candidates,
as a lexical engine only returns documents that share a term with the query. "dense" rows are
the same pooling scores without sparsification or rounding: the ceiling of each pooling.

    python benchmarks/bench_surrogate.py            # about 1 minute on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp

from teran_es.config import QuantizerConfig
from teran_es.surrogate import SparseEncoding, SurrogateTextEncoder, crelu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, write_results  # noqa: E402  (benchmarks/common.py)
from peers.mrsw import mrsw_scores  # noqa: E402  (benchmarks/peers/mrsw.py, the MrSw reference)

TOP_K = 10


@dataclass(frozen=True)
class SyntheticData:
    """regions float32 [N_img, R, D]; words float32 [Q, W, D]; targets int [Q] (the image each query describes)."""

    regions: np.ndarray
    words: np.ndarray
    targets: np.ndarray


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_synthetic(
    n_images: int, n_regions: int, dim: int, n_queries: int, n_words: int, seed: int, noise: float = 0.9
) -> SyntheticData:
    """Seeded clustered unit vectors (see the module docstring); all regions and words valid."""
    rng = np.random.default_rng(seed)
    n_concepts, concepts_per_image, n_background, n_stop = 400, 4, 8, 6
    shared = normalise(rng.standard_normal(dim))
    concepts = normalise(rng.standard_normal((n_concepts, dim)) + 0.8 * shared)
    background = normalise(rng.standard_normal((n_background, dim)) + 0.8 * shared)
    stop_words = normalise(rng.standard_normal((n_stop, dim)) + 0.8 * shared)
    popularity = 1.0 / np.arange(1, n_concepts + 1) ** 0.7  # Zipf-like: some concepts are common
    popularity /= popularity.sum()
    image_concepts = np.array(
        [rng.choice(n_concepts, concepts_per_image, replace=False, p=popularity) for _ in range(n_images)]
    )

    def noisy(centres: np.ndarray) -> np.ndarray:
        return normalise(centres + noise * rng.standard_normal(centres.shape) / np.sqrt(dim))

    which = rng.integers(0, concepts_per_image, (n_images, n_regions))
    region_centres = concepts[np.take_along_axis(image_concepts, which, axis=1)]
    is_background = rng.random((n_images, n_regions)) < 0.25
    region_centres[is_background] = background[rng.integers(0, n_background, int(is_background.sum()))]
    regions = noisy(region_centres)

    targets = rng.integers(0, n_images, n_queries)
    n_content = max(1, int(round(0.6 * n_words)))
    content = concepts[
        image_concepts[targets[:, None], rng.integers(0, concepts_per_image, (n_queries, n_content))]
    ]
    function = stop_words[rng.integers(0, n_stop, (n_queries, n_words - n_content))]
    words = noisy(np.concatenate([content, function], axis=1))
    return SyntheticData(regions, words, targets)


def top_k_ids(scores: np.ndarray, k: int) -> np.ndarray:
    """int [Q, k]: the k highest-scoring columns of each row (any order)."""
    k = min(k, scores.shape[1])
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def to_csr(encoding: SparseEncoding) -> sp.csr_matrix:
    return sp.csr_matrix(
        (encoding.values.astype(np.float64), encoding.indices, encoding.indptr),
        shape=(encoding.n_rows, encoding.n_components),
    )


def recall_at(first_stage: np.ndarray, exact_top: np.ndarray, candidates: int) -> float:
    """Mean fraction of the exact top-10 found among the top ``candidates`` with a positive score."""
    scores = np.where(first_stage > 0, first_stage, -np.inf)
    chosen = top_k_ids(scores, candidates)
    chosen_scores = np.take_along_axis(scores, chosen, axis=1)
    found = [
        len(set(exact_top[q].tolist()) & set(chosen[q][np.isfinite(chosen_scores[q])].tolist()))
        for q in range(scores.shape[0])
    ]
    return float(np.mean(found)) / exact_top.shape[1]


def image_scores(
    query_matrix: sp.csr_matrix, doc_matrix: sp.csr_matrix, n_images: int, pooling: str
) -> np.ndarray:
    """float [Q, N_img] first-stage scores; region documents are grouped back per image by max."""
    scores = (query_matrix @ doc_matrix.T).toarray()
    if pooling == "region":  # every region is valid here, so documents are image-major blocks of R
        scores = scores.reshape(scores.shape[0], n_images, -1).max(axis=2)
    return scores


def dense_ceiling_scores(encoder: SurrogateTextEncoder, data: SyntheticData, pooling: str) -> np.ndarray:
    """[Q, N_img]: the pooling's score on full CReLU'd vectors (no top-gamma, no rounding)."""
    n_images, n_regions, dim = data.regions.shape
    regions = crelu(encoder.transform(data.regions.reshape(-1, dim), "document")).reshape(
        n_images, n_regions, -1
    )
    query = (
        crelu(encoder.transform(data.words.reshape(-1, dim), "query"))
        .reshape(*data.words.shape[:2], -1)
        .sum(1)
    )
    if pooling == "max":
        return query @ regions.max(axis=1).T
    if pooling == "sum":
        return query @ regions.sum(axis=1).T
    return np.einsum("qc,irc->qir", query, regions).max(axis=2)


def settings_grid(dim: int) -> list[dict]:
    """The quantizer settings measured (QuantizerConfig overrides), sized as fractions of D."""

    def fraction(divisor: int) -> int:
        return max(1, dim // divisor)

    query_gamma = fraction(4)
    grid: list[dict] = []
    for pooling in ("max", "sum"):
        grid += [
            dict(pooling=pooling, doc_sparsify="pooled", doc_gamma=fraction(d), query_gamma=query_gamma)
            for d in (4, 2, 1)
        ]
        grid.append(dict(pooling=pooling, doc_sparsify="pooled", doc_gamma=2 * dim, query_gamma=query_gamma))
        grid += [
            dict(pooling=pooling, doc_sparsify="regions", gamma=fraction(d), query_gamma=query_gamma)
            for d in (32, 16, 8)
        ]
    grid += [dict(pooling="region", gamma=fraction(d), query_gamma=query_gamma) for d in (16, 8, 4)]
    for pooling, doc_gamma in (("max", fraction(2)), ("sum", fraction(1))):
        base = dict(pooling=pooling, doc_sparsify="pooled", doc_gamma=doc_gamma)
        grid += [dict(base, query_gamma=fraction(d)) for d in (8, 2)]
        grid += [dict(base, query_weighting="per-word", query_gamma=fraction(d)) for d in (32, 16, 8)]
    grid += [dict(pooling="region", gamma=fraction(4), query_weighting="per-word", query_gamma=fraction(16))]
    base = dict(pooling="sum", doc_sparsify="pooled", doc_gamma=fraction(1), query_gamma=query_gamma)
    grid += [dict(base, q_factor=q) for q in (5.0, 20.0, 200.0)]
    return grid


def measure_setting(
    overrides: dict, data: SyntheticData, exact_top: np.ndarray, fit_images: int, cs: list[int]
) -> dict:
    """Fit, encode, score and measure one setting; returns one result row."""
    config = QuantizerConfig(**{"gamma": 16, "q_factor": 50.0, "seed": 0, **overrides})
    started = time.perf_counter()
    encoder = SurrogateTextEncoder.fit(data.regions[:fit_images], config)
    documents = encoder.encode_images(data.regions).encoding
    queries = encoder.encode_queries(data.words)
    encode_seconds = time.perf_counter() - started
    doc_matrix, query_matrix = to_csr(documents), to_csr(queries)
    scores = image_scores(query_matrix, doc_matrix, data.regions.shape[0], config.pooling)
    document_frequency = np.bincount(documents.indices, minlength=documents.n_components)
    postings = np.array([document_frequency[queries.row(q)[0]].sum() for q in range(queries.n_rows)])
    return {
        "setting": overrides,
        "pooling": config.pooling,
        "doc_sparsify": config.doc_sparsify if config.pooling != "region" else "-",
        "gamma": encoder.gamma,
        "doc_gamma": encoder.doc_gamma if config.pooling != "region" else encoder.gamma,
        "query_weighting": config.query_weighting,
        "query_gamma": encoder.query_gamma,
        "q_factor": config.q_factor,
        "documents": documents.n_rows,
        "terms_per_document": float(documents.terms_per_row().mean()),
        "terms_per_query": float(queries.terms_per_row().mean()),
        "postings_per_query": float(postings.mean()),
        # the cost model's S = mean over the 2D terms of delta_i^2, delta_i = fraction of documents holding term i
        "selectivity": float(((document_frequency / documents.n_rows) ** 2).mean()),
        "clipped_tf_fraction": float((documents.values == config.max_tf).mean()) if documents.nnz else 0.0,
        "max_tf_seen": int(documents.values.max()) if documents.nnz else 0,
        "recall_at_10": {str(c): recall_at(scores, exact_top, c) for c in cs},
        "encode_seconds": round(encode_seconds, 3),
    }


def dense_ceiling_rows(
    data: SyntheticData, exact_top: np.ndarray, fit_images: int, cs: list[int]
) -> list[dict]:
    """Recall of each pooling's score on full CReLU'd vectors (no sparsification, no rounding)."""
    encoder = SurrogateTextEncoder.fit(data.regions[:fit_images], QuantizerConfig(pooling="region"))
    rows = []
    for pooling in ("max", "sum", "region"):
        scores = dense_ceiling_scores(encoder, data, pooling)
        rows.append(
            {
                "setting": {"pooling": pooling, "dense": True},
                "pooling": pooling,
                "doc_sparsify": "dense",
                "recall_at_10": {str(c): recall_at(scores, exact_top, c) for c in cs},
            }
        )
    return rows


def format_table(rows: list[dict], cs: list[int]) -> str:
    header = (
        f"{'pooling':7} {'sparsify':8} {'g':>3} {'doc_g':>5} {'query':8} {'q_g':>3} {'Q':>5} "
        f"{'t/doc':>6} {'t/q':>5} {'post/q':>8} " + " ".join(f"{'R@' + str(c):>7}" for c in cs)
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        recalls = " ".join(f"{row['recall_at_10'][str(c)]:7.3f}" for c in cs)
        if row["doc_sparsify"] == "dense":
            lines.append(
                f"{row['pooling']:7} {'dense':8} {'':>3} {'':>5} {'sum':8} {'':>3} {'':>5} "
                f"{'':>6} {'':>5} {'':>8} {recalls}"
            )
            continue
        gamma = "-" if row["doc_sparsify"] == "pooled" else str(row["gamma"])  # unused by pooled documents
        lines.append(
            f"{row['pooling']:7} {row['doc_sparsify']:8} {gamma:>3} {row['doc_gamma']:5d} "
            f"{row['query_weighting']:8} {row['query_gamma']:3d} {row['q_factor']:5g} "
            f"{row['terms_per_document']:6.1f} {row['terms_per_query']:5.1f} {row['postings_per_query']:8.0f} {recalls}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--regions", type=int, default=36)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--words", type=int, default=10)
    parser.add_argument("--fit-images", type=int, default=1000, help="images used to fit each quantizer")
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.9, help="noise norm relative to a cluster centre")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "surrogate.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    data = make_synthetic(
        args.images, args.regions, args.dim, args.queries, args.words, args.seed, args.noise
    )
    exact = mrsw_scores(data.regions, list(data.words))  # [Q, N_img]
    exact_top = top_k_ids(exact, TOP_K)
    target_rank = (exact > exact[np.arange(len(data.targets)), data.targets][:, None]).sum(axis=1)
    rows = dense_ceiling_rows(data, exact_top, args.fit_images, args.candidates)
    rows += [
        measure_setting(s, data, exact_top, args.fit_images, args.candidates) for s in settings_grid(args.dim)
    ]
    print(format_table(rows, args.candidates))
    result = {
        "benchmark": "surrogate first-stage recall of exact MrSw top-10",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_info(scipy=scipy.__version__),
        "data": {"target_in_exact_top10": float((target_rank < TOP_K).mean())},
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_results("surrogate", result, args.output)
    print(
        f"\nwrote {args.output} in {result['seconds']} s; target image in exact top-10 for "
        f"{result['data']['target_in_exact_top10']:.0%} of queries"
    )


if __name__ == "__main__":
    main()
