"""The scale benchmark's peer engines (benchmarks/peers): faiss over region vectors and
fast-plaid in its own virtual environment. Tiny sizes only (200 images x 4 regions x 32 dims)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

PEERS_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "peers"
N, R, D = 200, 4, 32


def _load(name: str):
    """Import benchmarks/peers/<name>.py as the package ``peers``, as the benchmarks do."""
    if str(PEERS_DIR.parent) not in sys.path:
        sys.path.insert(0, str(PEERS_DIR.parent))
    return importlib.import_module(f"peers.{name}")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    """Clustered unit region vectors [N, R, D] and queries made of noisy copies of one target
    image's regions (plus a random concept word or two)."""
    rng = np.random.default_rng(1234)
    centres = _unit(rng.standard_normal((24, D)))
    regions = _unit(centres[rng.integers(0, 24, size=(N, R))] + 0.25 * rng.standard_normal((N, R, D)))
    targets = rng.choice(N, size=12, replace=False)
    queries = []
    for t in targets:
        own = regions[t, rng.choice(R, size=3, replace=False)]
        other = centres[rng.integers(0, 24, size=int(rng.integers(0, 3)))]
        queries.append(_unit(np.concatenate([own, other]) + 0.05 * rng.standard_normal((3 + len(other), D))))
    return regions, queries, targets


def brute_force_mrsw(regions: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    """MrSw by definition: per word the max cosine over an image's regions, summed over words."""
    scores = (
        np.einsum("wd,nrd->wnr", query.astype(np.float64), regions.astype(np.float64)).max(axis=2).sum(axis=0)
    )
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]


@pytest.fixture(scope="module")
def faiss_peer():
    pytest.importorskip("faiss", reason="faiss-cpu is in the 'bench' extra: pip install -e .[bench]")
    return _load("faiss_peer")


def test_faiss_flat_with_every_region_is_exact_mrsw(faiss_peer, data, tmp_path):
    regions, queries, _ = data
    peer = faiss_peer.FaissPeer(threads=1)
    stats = peer.build(regions, tmp_path, factory="Flat", progress=False)
    assert stats["loaded_from_cache"] is False
    assert stats["settings"]["factory"] == "Flat"
    assert stats["bytes"] > 0 and stats["version"]
    ids, latencies = peer.search(queries, 15, k_regions=N * R)
    assert len(latencies) == len(queries) and all(t > 0 for t in latencies)
    for q, got in zip(queries, ids, strict=True):
        assert got == brute_force_mrsw(regions, q, 15)
    batched, total = peer.search_batched(queries, 15, k_regions=N * R)
    assert batched == ids and total > 0
    # "zero" imputation changes nothing when every word sees every region
    assert peer.search(queries, 15, k_regions=N * R, missing="zero")[0] == ids


def test_faiss_ivfpq_recall_after_rerank(faiss_peer, data, tmp_path):
    regions, queries, targets = data
    peer = faiss_peer.FaissPeer(threads=1)
    stats = peer.build(regions.astype(np.float16), tmp_path, nlist=16, m=4, progress=False)
    assert stats["settings"]["factory"] == "IVF16,PQ4x8np"
    ids, _ = peer.search(queries, 40, nprobe=4, k_regions=64)
    recalls, top1 = [], 0
    for q, cand, t in zip(queries, ids, targets, strict=True):
        assert len(cand) == len(set(cand)) <= 40 and all(0 <= i < N for i in cand)
        truth = brute_force_mrsw(regions, q, 10)
        cand = np.asarray(cand)
        exact = np.einsum("wd,nrd->wnr", q, regions[cand]).max(axis=2).sum(axis=0)
        reranked = cand[np.argsort(-exact, kind="stable")[:10]]
        recalls.append(len(set(reranked.tolist()) & set(truth)) / 10)
        top1 += int(reranked[0] == truth[0] == t)
    assert np.mean(recalls) >= 0.8
    assert top1 >= len(queries) - 1


def test_faiss_index_is_cached_by_settings_and_data(faiss_peer, data, tmp_path):
    regions, queries, _ = data
    first = faiss_peer.FaissPeer(threads=1)
    s1 = first.build(regions, tmp_path, nlist=8, m=4, progress=False)
    again = faiss_peer.FaissPeer(threads=1)
    s2 = again.build(regions, tmp_path, nlist=8, m=4, progress=False)
    assert (s1["loaded_from_cache"], s2["loaded_from_cache"]) == (False, True)
    assert s2["index_path"] == s1["index_path"] and s2["seconds"] == s1["seconds"]
    assert again.search(queries, 5)[0] == first.search(queries, 5)[0]
    other = faiss_peer.FaissPeer(threads=1).build(regions, tmp_path, nlist=4, m=4, progress=False)
    assert other["loaded_from_cache"] is False and other["index_path"] != s1["index_path"]
    changed = regions.copy()
    changed[0] = changed[1]
    moved = faiss_peer.FaissPeer(threads=1).build(changed, tmp_path, nlist=8, m=4, progress=False)
    assert moved["loaded_from_cache"] is False


def test_faiss_settings_are_checked(faiss_peer, data, tmp_path, monkeypatch):
    regions, queries, _ = data
    peer = faiss_peer.FaissPeer(threads=1)
    with pytest.raises(TypeError, match="unknown faiss build settings"):
        peer.build(regions, tmp_path, nprobe=3)
    with pytest.raises(ValueError, match="must divide"):
        peer.build(regions, tmp_path, m=5)
    with pytest.raises(RuntimeError, match="before build"):
        peer.search(queries, 5)
    monkeypatch.setattr(faiss_peer, "FLAT_MAX_VECTORS", N * R - 1)
    with pytest.raises(ValueError, match="Flat"):
        peer.build(regions, tmp_path, factory="Flat")
    monkeypatch.undo()
    peer.build(regions, tmp_path, factory="Flat", progress=False)
    with pytest.raises(ValueError, match="missing"):
        peer.search(queries, 5, missing="one")
    with pytest.raises(ValueError, match=r"\[W, 32\]"):
        peer.search([np.zeros((2, 16), np.float32)], 5)


def test_faiss_hnsw_coarse_quantizer_from_a_memmap(faiss_peer, data, tmp_path, monkeypatch):
    """The large-collection default (IVF with an HNSW coarse quantizer), fed a float16 memmap."""
    regions, queries, targets = data
    np.save(tmp_path / "regions.npy", regions.astype(np.float16))
    mm = np.load(tmp_path / "regions.npy", mmap_mode="r")
    monkeypatch.setattr(faiss_peer, "HNSW_QUANTIZER_FROM_NLIST", 16)
    peer = faiss_peer.FaissPeer(threads=1)
    stats = peer.build(mm, tmp_path, nlist=16, m=4, chunk_images=64, progress=False)
    assert stats["settings"]["factory"] == "IVF16_HNSW32,PQ4x8np"
    ids, _ = peer.search(queries, 10, nprobe=8)
    assert peer.last_search["nprobe"] == 8 and peer.last_search["quantizer_efSearch"] == 64
    assert sum(found[0] == t for found, t in zip(ids, targets, strict=True)) >= len(queries) - 2


def test_default_nlist_follows_four_sqrt_rule(faiss_peer):
    assert faiss_peer.default_nlist(160_000) == 2048  # 4*sqrt(160k) = 1600
    assert faiss_peer.default_nlist(16_000_000) == 16384  # 4*sqrt(16M) = 16000


def test_each_peer_object_searches_its_own_build(faiss_peer, data, tmp_path):
    # the benchmark holds one peer object per build: a later build elsewhere changes nothing
    regions, queries, _ = data
    peer = faiss_peer.FaissPeer(threads=1)
    peer.build(regions, tmp_path / "a", factory="Flat", progress=False)
    other = faiss_peer.FaissPeer(threads=1)
    other.build(regions[: N // 2], tmp_path / "b", factory="Flat", progress=False)
    ids, lat = peer.search(queries[:2], 3, k_regions=N * R, threads=1)
    assert ids == [brute_force_mrsw(regions, q, 3) for q in queries[:2]] and len(lat) == 2


def test_top_k_breaks_ties_by_smaller_id():
    util = _load("_util")
    ids = np.array([7, 3, 5, 1])
    assert util.top_k(ids, np.array([1.0, 2.0, 2.0, 0.5], np.float32), 2) == [3, 5]
    assert util.top_k(ids, np.array([1.0, 1.0, 1.0, 1.0], np.float32), 3) == [1, 3, 5]


# ---------------------------------------------------------------- fast-plaid


@pytest.fixture(scope="module")
def fast_plaid_peer():
    return _load("fast_plaid_peer")


def test_memmap_source_finds_the_bytes_on_disk(fast_plaid_peer, data, tmp_path):
    regions, _, _ = data
    path = tmp_path / "r.npy"
    np.save(path, regions.astype(np.float16))
    mm = np.load(path, mmap_mode="r")
    for view in (mm, mm[50:], mm[10:20]):
        src = fast_plaid_peer.memmap_source(view)
        assert src is not None and src[0] == str(path)
        back = np.memmap(src[0], dtype=np.float16, mode="r", offset=src[1], shape=view.shape)
        assert np.array_equal(back, view)
    assert fast_plaid_peer.memmap_source(regions) is None  # float32 in memory: copied instead
    assert fast_plaid_peer.memmap_source(mm[:, :2]) is None  # not contiguous


def test_worker_failure_is_reported_with_its_output(fast_plaid_peer, tmp_path):
    peer = fast_plaid_peer.FastPlaidPeer(threads=1, verbose=False)
    peer.python = Path(sys.executable)  # the worker rejects the command before importing anything
    peer.workdir = tmp_path
    with pytest.raises(fast_plaid_peer.FastPlaidError, match=r"exited with 2(.|\n)*unknown command 'nope'"):
        peer._run_worker({"command": "nope"}, threads=1)


def test_an_explicit_broken_venv_is_never_installed_into(fast_plaid_peer, tmp_path):
    with pytest.raises(fast_plaid_peer.FastPlaidError, match="pip install fast-plaid=="):
        fast_plaid_peer.ensure_venv(tmp_path / "no-venv")
    assert not (tmp_path / "no-venv").exists()


@pytest.fixture(scope="module")
def fast_plaid_venv(fast_plaid_peer):
    venv = fast_plaid_peer.default_venv()
    if not fast_plaid_peer.venv_python(venv).exists():
        pytest.skip(
            f"no fast-plaid virtual environment at {venv} (the benchmark creates it on first use, ~5 GB; "
            f"set {fast_plaid_peer.VENV_ENV_VAR} to an existing one to run this test)"
        )
    return venv


@pytest.mark.slow
def test_fast_plaid_top1_matches_brute_force(fast_plaid_peer, fast_plaid_venv, data, tmp_path):
    regions, queries, targets = data
    peer = fast_plaid_peer.FastPlaidPeer(threads=1, venv=fast_plaid_venv, verbose=False)
    stats = peer.build(regions, tmp_path)
    assert stats["loaded_from_cache"] is False and stats["bytes"] > 0 and stats["version"]
    assert stats["settings"]["nbits"] == 4 and stats["library_defaults"]["differs"] == []
    easy = queries[:4]
    result = peer.search_all(easy, 5)
    assert len(result["latencies"]) == len(easy) and result["batched_seconds"] > 0
    for q, t, single, batched in zip(
        easy, targets[:4], result["single_ids"], result["batched_ids"], strict=True
    ):
        assert single[0] == batched[0] == brute_force_mrsw(regions, q, 1)[0] == t
    again = fast_plaid_peer.FastPlaidPeer(threads=1, venv=fast_plaid_venv, verbose=False)
    assert again.build(regions, tmp_path)["loaded_from_cache"] is True  # no worker run
    assert again.index_dir == peer.index_dir
