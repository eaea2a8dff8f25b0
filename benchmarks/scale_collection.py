"""Synthetic collections of N images whose region embeddings look like the OpenMoji model's own,
with real test captions as queries and their exact MrSw top-100 lists.

The recipe (``RegionRecipe``, every number in it is recorded in the manifest):

1. **Real embeddings** (computed once per model, cached apart from any N): the trained model
   encodes every image of the OpenMoji collection (all splits, ~4,081 images, 16 regions of
   256 dimensions each, L2-normalised) and every caption of the test split (its scored word
   vectors only, per the model's word mask).
2. **Recombination**: synthetic image j takes a base real image a_j and a donor real image
   b_j != a_j (both uniform), and s_j ~ uniform{0..max_donor_regions}; s_j region slots chosen
   uniformly take the donor's region at the same slot (the grid position is kept), the rest
   stay the base's.
3. **Perturbation** (per region slot s, i.e. grid position, with the real regions' slot mean
   mu_s and covariance C_s): x -> mu_s + rho (x - mu_s) + sqrt(1 - rho^2) n, n ~ N(0, C_s),
   then L2-normalised. The perturbed deviations keep the real ones' covariance, so the
   regions' distribution is kept to second order while each copy moves away from its source.
   rho is calibrated (bisection on a seeded sample) so that the mean *centred* cosine between
   a perturbed region and its source (of their deviations from mu_s) is ``centred_cosine``
   (0.9 by default); the centred and raw cosines reached over the whole collection are
   measured and recorded. Why not isotropic noise at raw cosine 0.9: the real regions share a
   large common component (their mean has length ~0.9), so noise that large would exceed the
   whole spread between real images and flatten their similarity structure; the manifest
   records the statistics of that variant on a sample next to the real and synthetic ones.
4. Stored as float16 ``regions.npy`` [N, R, D] (np.memmap). Randomness comes in fixed chunks
   of ``CHUNK_IMAGES`` images, chunk c drawing from ``default_rng([seed, 1, c])``, so the
   collection depends on (real embeddings, recipe) only.

Queries: a seeded permutation (``default_rng([seed, 2])``) of the test captions that have at
least one scored word; the first n_queries of it (so a smaller query count is a prefix of a
larger one). Their real images are in the collection only as perturbed copies, or not at all.

Exact top lists: the benchmarks' numpy MrSw reference (``peers/mrsw.py``), a chunked brute-force
scan in float32 over all N images (all queries' words in one matrix product per chunk of images,
chunk size bounded by ``max_bytes``), with a running top-``TOP`` per query merged by a stable
sort, so ties go to the lower image index.

One directory per (model, N, seed) under ``<cache>/bench/``; manifest.json is written last,
so a directory without it (an interrupted build) is rebuilt.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peers.mrsw import DEFAULT_MAX_BYTES, images_per_chunk, mrsw_scores, mrsw_top
from tqdm.auto import tqdm

FORMAT = "teran-es/bench-scale-collection/1"
REAL_FORMAT = "teran-es/bench-scale-real/1"
CHUNK_IMAGES = 4096  # images per random stream of the recipe (changing it changes the collection)
TOP = 100  # length of the exact top lists
MANIFEST = "manifest.json"
RUNS = "runs"  # what benchmarks derive from the regions (stores, indexes) lives here


# ----------------------------------------------------------------------------- inputs


@dataclass
class RealEmbeddings:
    """What the model made of the real collection.

    regions: float32 [M, R, D] L2-normalised region vectors of every real image;
    query_texts: the test split's captions; query_words: one float32 [W_i, D] per caption
    (scored words only; W_i may be 0 for a caption the tokenizer reduces to nothing).
    """

    regions: np.ndarray
    query_texts: list[str]
    query_words: list[np.ndarray]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class RegionRecipe:
    n_images: int
    seed: int = 0
    max_donor_regions: int = 4
    centred_cosine: float = 0.9

    def __post_init__(self) -> None:
        if self.n_images < 1:
            raise ValueError(f"n_images must be >= 1, got {self.n_images}")
        if self.max_donor_regions < 0:
            raise ValueError("max_donor_regions must be >= 0")
        if not 0.0 < self.centred_cosine <= 1.0:
            raise ValueError(f"centred_cosine must be in (0, 1], got {self.centred_cosine}")


def image_id(index: int) -> str:
    """The stable id of synthetic image ``index`` (0-based)."""
    return f"scale-{index:07d}"


def collection_dir(cache_root: Path, model_fingerprint: str, n_images: int, seed: int) -> Path:
    return Path(cache_root) / "bench" / f"scale-{model_fingerprint[:12]}-{n_images}-seed{seed}"


# ------------------------------------------------------------------- real embeddings


def real_cache_dir(cache_root: Path, model_fingerprint: str) -> Path:
    return Path(cache_root) / "bench" / f"scale-{model_fingerprint[:12]}-real"


def _save_word_lists(directory: Path, stem: str, words: Sequence[np.ndarray], dim: int) -> None:
    """One float32 [W_q, dim] array per caption, as ``{stem}_words.npy`` (all rows, caption
    after caption) and ``{stem}_lengths.npy`` (W_q of each)."""
    rows = np.concatenate([w.reshape(-1, dim) for w in words]) if words else np.zeros((0, dim))
    np.save(directory / f"{stem}_words.npy", rows.astype(np.float32))
    np.save(directory / f"{stem}_lengths.npy", np.array([w.shape[0] for w in words], dtype=np.int64))


def _load_word_lists(directory: Path, stem: str) -> list[np.ndarray]:
    """What :func:`_save_word_lists` wrote, split back into one array per caption."""
    rows = np.load(directory / f"{stem}_words.npy")
    bounds = np.concatenate([[0], np.cumsum(np.load(directory / f"{stem}_lengths.npy"))])
    return [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _read_manifest(directory: Path, fmt: str) -> dict[str, Any] | None:
    """The directory's manifest when it is complete and of format ``fmt``, else None."""
    path = directory / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    return manifest if manifest.get("format") == fmt else None


def save_real(real: RealEmbeddings, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "regions.npy", real.regions.astype(np.float32))
    _save_word_lists(directory, "caption", real.query_words, real.regions.shape[-1])
    meta = {"format": REAL_FORMAT, "query_texts": real.query_texts, "info": real.info}
    _write_json(directory / MANIFEST, meta)


def load_real(directory: Path) -> RealEmbeddings | None:
    """The cached real embeddings, or None when the directory holds no complete copy."""
    meta = _read_manifest(directory, REAL_FORMAT)
    if meta is None:
        return None
    return RealEmbeddings(
        regions=np.load(directory / "regions.npy"),
        query_texts=list(meta["query_texts"]),
        query_words=_load_word_lists(directory, "caption"),
        info=meta.get("info", {}),
    )


def encode_real(model, collection: Path, batch_size: int = 128, progress: bool = True) -> RealEmbeddings:
    """Encode every OpenMoji image and every test caption with ``model`` (CPU or its device)."""
    from teran_es.encoding import encode_image_records
    from teran_es.features.image_table import iter_collection_images

    images = list(iter_collection_images(collection))
    size = model.config.image_size
    decode_s = encode_s = 0.0
    regions = []
    bar = tqdm(total=len(images), desc="encode real images", unit="img", disable=not progress)
    for start in range(0, len(images), batch_size):
        t = time.perf_counter()
        batch = [im.decoded(size) for im in images[start : start + batch_size]]
        decode_s += time.perf_counter() - t
        t = time.perf_counter()
        out = encode_image_records(model, batch, model.device)
        if not bool(out.mask.all()):
            raise ValueError("expected every region slot to be valid (a grid front end)")
        regions.append(out.regions.float().cpu().numpy())
        encode_s += time.perf_counter() - t
        bar.update(len(batch))
    bar.close()
    captions = [c for im in images if im.split == "test" for c in im.captions]
    words: list[np.ndarray] = []
    t = time.perf_counter()
    for start in tqdm(
        range(0, len(captions), batch_size), desc="encode test captions", unit="batch", disable=not progress
    ):
        chunk = captions[start : start + batch_size]
        tokens = model.tokenize(chunk)
        with torch.inference_mode():
            out = model.encode_texts(tokens["input_ids"].to(model.device), tokens["attention_mask"].to(model.device))
        vectors, mask = out.words.float().cpu().numpy(), out.mask.cpu().numpy()
        words.extend(vectors[i][mask[i]] for i in range(len(chunk)))
    text_s = time.perf_counter() - t
    info = {
        "real_images": len(images),
        "test_captions": len(captions),
        "splits": {s: sum(1 for im in images if im.split == s) for s in sorted({im.split for im in images})},
        "seconds": {"decode_images": round(decode_s, 3), "encode_images": round(encode_s, 3), "encode_captions": round(text_s, 3)},
        "encode_images_per_s": round(len(images) / encode_s, 1) if encode_s else None,
        "decode_images_per_s": round(len(images) / decode_s, 1) if decode_s else None,
        "device": str(model.device),
        "torch_threads": torch.get_num_threads(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return RealEmbeddings(np.concatenate(regions).astype(np.float32), captions, words, info)


def real_embeddings(
    cache_root: Path, model_fingerprint: str, load_model: Callable[[], Any], collection: Callable[[], Path], progress: bool
) -> tuple[RealEmbeddings, bool]:
    """The cached real embeddings of this model, computed first when missing; (embeddings, fresh)."""
    directory = real_cache_dir(cache_root, model_fingerprint)
    cached = load_real(directory)
    if cached is not None:
        return cached, False
    real = encode_real(load_model(), collection(), progress=progress)
    real.info["model_fingerprint"] = model_fingerprint
    save_real(real, directory)
    return real, True


# ------------------------------------------------------------------------- recipe


@dataclass
class SlotModel:
    """Per region slot s: the real regions' mean [R, D] and a square root of their covariance
    (``factor[s] @ factor[s].T`` = Cov_s, [R, D, D]), float32."""

    mean: np.ndarray
    factor: np.ndarray


def fit_slot_model(real_regions: np.ndarray) -> SlotModel:
    x = real_regions.astype(np.float64)
    mean = x.mean(axis=0)
    factors = []
    for s in range(x.shape[1]):
        centred = x[:, s] - mean[s]
        cov = centred.T @ centred / max(1, centred.shape[0] - 1)
        values, vectors = np.linalg.eigh(cov)
        factors.append(vectors * np.sqrt(np.clip(values, 0.0, None)))
    return SlotModel(mean.astype(np.float32), np.stack(factors).astype(np.float32))


def slot_noise(model: SlotModel, count: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [count, R, D]: per slot, Gaussian with that slot's covariance."""
    z = rng.standard_normal((model.mean.shape[0], count, model.mean.shape[1]), dtype=np.float32)
    return np.matmul(z, model.factor.transpose(0, 2, 1)).transpose(1, 0, 2)


def perturb(source: np.ndarray, model: SlotModel, rho: float, noise: np.ndarray) -> np.ndarray:
    """mean_s + rho (x - mean_s) + sqrt(1 - rho^2) noise, L2-normalised ([c, R, D] float32).

    With noise ~ N(0, Cov_s) the perturbed deviation has the covariance of the real ones: the
    distribution of the regions (per slot, to second order) is kept, while each copy moves
    away from its source. ``noise`` is overwritten (it becomes the result)."""
    out = noise
    out *= np.float32(np.sqrt(1.0 - rho * rho))
    out += np.float32(rho) * (source - model.mean)
    out += model.mean
    out /= np.sqrt(np.einsum("...d,...d->...", out, out))[..., None]
    return out


def centred_cosine(perturbed: np.ndarray, source: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Cosine of the deviations from the slot mean, per region ([..., D] -> [...])."""
    a, b = perturbed - mean, source - mean
    dot = np.einsum("...d,...d->...", a, b)
    norms = np.sqrt(np.einsum("...d,...d->...", a, a) * np.einsum("...d,...d->...", b, b))
    return dot / np.maximum(norms, 1e-12)


def _bisect(measure: Callable[[float], float], target: float, low: float, high: float, increasing: bool) -> float:
    for _ in range(24):  # interval / 2**24: far below what the mean cosine of a sample resolves
        mid = (low + high) / 2
        if (measure(mid) < target) == increasing:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def calibrate_rho(real_regions: np.ndarray, model: SlotModel, target_cosine: float, seed: int, sample: int = 1000) -> float:
    """rho whose mean centred cosine (perturbed vs source) on a seeded sample is ``target_cosine``."""
    if target_cosine >= 1.0:
        return 1.0
    rng = np.random.default_rng([seed, 4])
    source = real_regions[rng.choice(real_regions.shape[0], size=min(sample, real_regions.shape[0]), replace=False)]
    noise = slot_noise(model, source.shape[0], rng)  # the same draws for every trial: monotone in rho

    def mean_cosine(rho: float) -> float:
        return float(centred_cosine(perturb(source, model, rho, noise.copy()), source, model.mean).mean())

    return _bisect(mean_cosine, target_cosine, 0.0, 1.0, increasing=True)


def calibrate_isotropic_sigma(real_regions: np.ndarray, target_cosine: float, seed: int, sample: int = 20000) -> float:
    """Isotropic noise scale whose mean (raw) cosine perturbed vs source is ``target_cosine``
    (the simpler recipe, kept as a recorded comparison)."""
    flat = real_regions.reshape(-1, real_regions.shape[-1])
    rng = np.random.default_rng([seed, 5])
    source = flat[rng.choice(flat.shape[0], size=min(sample, flat.shape[0]), replace=False)].astype(np.float32)
    noise = rng.standard_normal(source.shape, dtype=np.float32)

    def mean_cosine(sigma: float) -> float:
        noisy = source + sigma * noise
        return float(np.mean(np.sum(noisy * source, axis=1) / np.linalg.norm(noisy, axis=1)))

    return _bisect(mean_cosine, target_cosine, 0.0, 4.0, increasing=False)


@dataclass
class ChunkDraw:
    """The random choices of one chunk: base, donor, donor slot mask [c, R]."""

    base: np.ndarray
    donor: np.ndarray
    swapped: np.ndarray


def draw_chunk(recipe: RegionRecipe, chunk: int, count: int, n_real: int, n_regions: int) -> tuple[ChunkDraw, np.random.Generator]:
    rng = np.random.default_rng([recipe.seed, 1, chunk])
    base = rng.integers(n_real, size=count)
    donor = (base + rng.integers(1, max(2, n_real), size=count)) % n_real if n_real > 1 else base.copy()
    swaps = rng.integers(0, recipe.max_donor_regions + 1, size=count)
    ranks = np.argsort(rng.random((count, n_regions)), axis=1).argsort(axis=1)
    return ChunkDraw(base, donor, ranks < swaps[:, None]), rng


def synthesize(
    real_regions: np.ndarray, recipe: RegionRecipe, out: np.ndarray, model: SlotModel, rho: float, progress: bool = True
) -> dict[str, Any]:
    """Fill ``out`` [N, R, D] (float16) by the recipe; returns provenance arrays and measurements."""
    n_real, n_regions, _ = real_regions.shape
    n = recipe.n_images
    base = np.empty(n, dtype=np.int32)
    donor = np.empty(n, dtype=np.int32)
    swapped = np.empty(n, dtype=np.int8)
    raw_sum = centred_sum = 0.0
    n_chunks = (n + CHUNK_IMAGES - 1) // CHUNK_IMAGES
    for chunk in tqdm(range(n_chunks), desc=f"synthesize {n:,} images", unit="chunk", disable=not progress):
        lo = chunk * CHUNK_IMAGES
        hi = min(n, lo + CHUNK_IMAGES)
        draw, rng = draw_chunk(recipe, chunk, hi - lo, n_real, n_regions)
        source = np.where(draw.swapped[..., None], real_regions[draw.donor], real_regions[draw.base])
        perturbed = perturb(source, model, rho, slot_noise(model, hi - lo, rng))
        raw_sum += float(np.einsum("...d,...d->...", perturbed, source).sum(dtype=np.float64))
        centred_sum += float(np.sum(centred_cosine(perturbed, source, model.mean), dtype=np.float64))
        out[lo:hi] = perturbed.astype(np.float16)
        base[lo:hi], donor[lo:hi] = draw.base, draw.donor
        swapped[lo:hi] = draw.swapped.sum(axis=1)
    copies = np.bincount(base, minlength=n_real)
    return {
        "base": base,
        "donor": donor,
        "swapped": swapped,
        "mean_cosine_to_source": raw_sum / (n * n_regions),
        "mean_centred_cosine_to_source": centred_sum / (n * n_regions),
        "donor_region_fraction": float(swapped.sum()) / (n * n_regions),
        "copies_per_real_image": {
            "mean": round(float(copies.mean()), 2),
            "max": int(copies.max()),
            "real_images_never_used_as_base": int((copies == 0).sum()),
        },
    }


def isotropic_alternative(real_regions: np.ndarray, seed: int, target_cosine: float = 0.9, sample: int = 2000) -> np.ndarray:
    """A sample of real images perturbed by isotropic noise at raw cosine ``target_cosine``
    (for the statistics only: what the simpler recipe would have made)."""
    sigma = calibrate_isotropic_sigma(real_regions, target_cosine, seed)
    rng = np.random.default_rng([seed, 6])
    source = real_regions[rng.choice(real_regions.shape[0], size=min(sample, real_regions.shape[0]), replace=False)]
    noisy = source + sigma * rng.standard_normal(source.shape, dtype=np.float32)
    return noisy / np.linalg.norm(noisy, axis=-1, keepdims=True)


def select_queries(real: RealEmbeddings, n_queries: int, seed: int) -> list[int]:
    """Indices of the query captions: a seeded permutation of those with a scored word, cut."""
    usable = [i for i, w in enumerate(real.query_words) if w.shape[0] > 0]
    order = np.random.default_rng([seed, 2]).permutation(len(usable))
    return [usable[i] for i in order[: min(n_queries, len(usable))]]


# --------------------------------------------------------------------- exact scan


def exact_scan(
    regions: np.ndarray,
    query_words: Sequence[np.ndarray],
    top: int = TOP,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Exact MrSw top lists over all of ``regions`` [N, R, D] for every query (float32, the
    benchmarks' numpy reference ``peers.mrsw.mrsw_top``).

    Returns (ids int32 [Q, top'], scores float32 [Q, top'], info) with top' = min(top, N), best
    first, ties broken by the lower index. Memory: one [sum W, chunk * R] float32 similarity
    block of at most ``max_bytes`` (at least one image per chunk).
    """
    n, n_regions, _ = regions.shape
    n_words = sum(int(w.shape[0]) for w in query_words)
    started = time.perf_counter()
    with tqdm(total=n, desc=f"exact scan {n:,} x {len(query_words)}", unit="image", disable=not progress) as bar:
        ids, scores = mrsw_top(regions, query_words, top, max_bytes=max_bytes, progress=bar.update)
    info = {
        "seconds": round(time.perf_counter() - started, 3),
        "device": "cpu",
        "images_per_chunk": images_per_chunk(n_words, n_regions, max_bytes),
        "words": int(n_words),
        "max_bytes": int(max_bytes),
    }
    return ids.astype(np.int32), scores.astype(np.float32), info


# --------------------------------------------------------------------- statistics


def _summary(values: np.ndarray) -> dict[str, float]:
    p = np.percentile(values, [5, 25, 50, 75, 95])
    return {
        "mean": round(float(values.mean()), 4),
        "std": round(float(values.std()), 4),
        "p5": round(float(p[0]), 4),
        "p25": round(float(p[1]), 4),
        "p50": round(float(p[2]), 4),
        "p75": round(float(p[3]), 4),
        "p95": round(float(p[4]), 4),
    }


def region_statistics(regions: np.ndarray, words: np.ndarray, rng: np.random.Generator, sample: int = 2000) -> dict[str, Any]:
    """Distributions that describe a set of images [n, R, D] against query words [w, D]:
    cosine of random region pairs from different images and within an image, the best-region
    similarity of a word per image (what MrSw sums), and the length of the mean region."""
    n, n_regions, _ = regions.shape
    picks = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    chosen = np.asarray(regions[picks], dtype=np.float32)
    flat = chosen.reshape(-1, chosen.shape[-1])
    a, b = rng.integers(flat.shape[0], size=(2, 20000))
    across = a // n_regions != b // n_regions
    pair_cos = np.sum(flat[a[across]] * flat[b[across]], axis=1)
    i, j = rng.integers(n_regions, size=(2, chosen.shape[0]))
    keep = i != j
    within = np.sum(chosen[np.arange(chosen.shape[0])[keep], i[keep]] * chosen[np.arange(chosen.shape[0])[keep], j[keep]], axis=1)
    word_pick = words[rng.choice(words.shape[0], size=min(500, words.shape[0]), replace=False)].astype(np.float32)
    best = (word_pick @ flat.T).reshape(word_pick.shape[0], chosen.shape[0], n_regions).max(axis=2).ravel()
    return {
        "images_sampled": int(chosen.shape[0]),
        "region_pair_cosine_across_images": _summary(pair_cos),
        "region_pair_cosine_within_image": _summary(within),
        "word_best_region_similarity": _summary(best),
        "region_norm": _summary(np.linalg.norm(flat, axis=1)),
        "mean_region_length": round(float(np.linalg.norm(flat.mean(axis=0))), 4),
    }


# ----------------------------------------------------------------------- collection


@dataclass
class ScaleCollection:
    """A built collection (see the module docstring). ``regions`` is memory-mapped."""

    path: Path
    manifest: dict[str, Any]
    regions: np.ndarray  # float16 [N, R, D]
    query_texts: list[str]
    query_words: list[np.ndarray]  # float32 [W_q, D]
    exact_top: np.ndarray  # int32 [Q, top]
    exact_scores: np.ndarray  # float32 [Q, top]

    @property
    def n_images(self) -> int:
        return int(self.regions.shape[0])

    @property
    def n_queries(self) -> int:
        return len(self.query_texts)

    def image_ids(self) -> list[str]:
        return [image_id(i) for i in range(self.n_images)]

    def scores_of(self, query: int, indices: Sequence[int]) -> np.ndarray:
        """Exact MrSw (float32) of query ``query`` for the images ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx)
        out = np.empty(idx.size, dtype=np.float32)
        out[order] = mrsw_scores(self.regions[idx[order]], [self.query_words[query]])[0]
        return out

    def head(self, n_queries: int) -> ScaleCollection:
        """The same collection with its first ``n_queries`` queries only."""
        return dataclasses.replace(
            self,
            query_texts=self.query_texts[:n_queries],
            query_words=self.query_words[:n_queries],
            exact_top=self.exact_top[:n_queries],
            exact_scores=self.exact_scores[:n_queries],
        )


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


def load_collection(directory: Path) -> ScaleCollection | None:
    manifest = _read_manifest(directory, FORMAT)
    if manifest is None:
        return None
    return ScaleCollection(
        path=directory,
        manifest=manifest,
        regions=np.load(directory / "regions.npy", mmap_mode="r"),
        query_texts=list(manifest["queries"]["texts"]),
        query_words=_load_word_lists(directory, "query"),
        exact_top=np.load(directory / "exact_top.npy"),
        exact_scores=np.load(directory / "exact_scores.npy"),
    )


def build_collection(
    real: RealEmbeddings,
    recipe: RegionRecipe,
    directory: Path,
    n_queries: int,
    *,
    model_fingerprint: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool = True,
) -> tuple[ScaleCollection, dict[str, Any]]:
    """The collection at ``directory``: loaded when built with the same recipe and at least
    ``n_queries`` queries, else (re)built; returns it cut to ``n_queries`` and what was done."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = load_collection(directory)
    recipe_dict = dataclasses.asdict(recipe)
    same_regions = (
        existing is not None
        and existing.manifest.get("recipe") == recipe_dict
        and existing.manifest.get("model_fingerprint") == model_fingerprint
    )
    if same_regions and existing.n_queries >= min(n_queries, existing.manifest["queries"]["available"]):
        return existing.head(n_queries), {"built": False, "seconds": existing.manifest["seconds"]}

    seconds: dict[str, float] = {}
    manifest: dict[str, Any]
    if same_regions:
        manifest = dict(existing.manifest)
        seconds = dict(manifest["seconds"])
        regions = existing.regions
    else:
        (directory / MANIFEST).unlink(missing_ok=True)
        # Whatever was built from the old regions (stores, indexes) is stale now.
        shutil.rmtree(directory / RUNS, ignore_errors=True)
        t = time.perf_counter()
        slot_model = fit_slot_model(real.regions)
        rho = calibrate_rho(real.regions, slot_model, recipe.centred_cosine, recipe.seed)
        _, n_regions, dim = real.regions.shape
        out = np.lib.format.open_memmap(
            directory / "regions.npy", mode="w+", dtype=np.float16, shape=(recipe.n_images, n_regions, dim)
        )
        made = synthesize(real.regions, recipe, out, slot_model, rho, progress=progress)
        out.flush()
        del out
        np.savez(directory / "provenance.npz", base=made["base"], donor=made["donor"], swapped=made["swapped"])
        seconds["synthesize"] = round(time.perf_counter() - t, 3)
        regions = np.load(directory / "regions.npy", mmap_mode="r")
        t = time.perf_counter()
        all_words = np.concatenate([w for w in real.query_words if w.shape[0]])
        real_stats = region_statistics(real.regions, all_words, np.random.default_rng([recipe.seed, 3]))
        synth_stats = region_statistics(regions, all_words, np.random.default_rng([recipe.seed, 3]))
        iso_stats = region_statistics(
            isotropic_alternative(real.regions, recipe.seed), all_words, np.random.default_rng([recipe.seed, 3])
        )
        seconds["statistics"] = round(time.perf_counter() - t, 3)
        manifest = {
            "format": FORMAT,
            "model_fingerprint": model_fingerprint,
            "regions_id": uuid.uuid4().hex,  # names this build of the regions for what is derived from them
            "recipe": recipe_dict,
            "recipe_constants": {"chunk_images": CHUNK_IMAGES, "top": TOP},
            "real": {"images": int(real.regions.shape[0]), "regions_per_image": int(n_regions), "dim": int(dim), **real.info},
            "perturbation": {
                "rho": rho,
                "target_mean_centred_cosine_to_source": recipe.centred_cosine,
                "measured_mean_centred_cosine_to_source": round(made["mean_centred_cosine_to_source"], 5),
                "measured_mean_cosine_to_source": round(made["mean_cosine_to_source"], 5),
            },
            "donor_region_fraction": round(made["donor_region_fraction"], 5),
            "copies_per_real_image": made["copies_per_real_image"],
            "statistics": {
                "real": real_stats,
                "synthetic": synth_stats,
                "isotropic_noise_raw_cosine_0.9_sample": iso_stats,
            },
        }

    chosen = select_queries(real, n_queries, recipe.seed)
    words = [real.query_words[i] for i in chosen]
    exact_ids, exact_scores, exact_info = exact_scan(regions, words, max_bytes=max_bytes, progress=progress)
    seconds["exact_scan"] = exact_info["seconds"]
    np.save(directory / "exact_top.npy", exact_ids)
    np.save(directory / "exact_scores.npy", exact_scores)
    _save_word_lists(directory, "query", words, regions.shape[-1])
    manifest["queries"] = {
        "count": len(chosen),
        "available": sum(1 for w in real.query_words if w.shape[0] > 0),
        "caption_indices": chosen,
        "texts": [real.query_texts[i] for i in chosen],
        "words_per_query": _summary(np.array([w.shape[0] for w in words], dtype=np.float64)) if words else None,
    }
    manifest["exact_scan"] = exact_info
    manifest["seconds"] = seconds
    manifest["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_json(directory / MANIFEST, manifest)
    collection = load_collection(directory)
    assert collection is not None
    return collection.head(n_queries), {"built": True, "regions_rebuilt": not same_regions, "seconds": seconds}
