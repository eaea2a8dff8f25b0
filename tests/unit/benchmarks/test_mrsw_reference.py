"""benchmarks/peers/mrsw.py, the benchmarks' one MrSw reference: scores, streamed top lists,
tie order, and that it imports with numpy alone (as the fast-plaid worker's environment has)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from peers import mrsw  # noqa: E402


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _definition(regions: np.ndarray, words: np.ndarray) -> np.ndarray:
    """float64 [N]: sum over words of the max over an image's regions of the dot product."""
    sims = np.einsum("wd,nrd->wnr", words.astype(np.float64), regions.astype(np.float64))
    return sims.max(axis=2).sum(axis=0) if len(words) else np.zeros(regions.shape[0])


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    regions = _unit(rng.standard_normal((57, 5, 12))).astype(np.float16)
    words = [_unit(rng.standard_normal((n, 12))) for n in (3, 1, 0, 6)]  # one query without words
    return regions, words


@pytest.mark.parametrize("max_bytes", [1, 2000, 1 << 30])  # one image per chunk, a few, all at once
def test_scores_are_the_definition(data, max_bytes):
    regions, words = data
    got = mrsw.mrsw_scores(regions, words, max_bytes=max_bytes)
    assert got.shape == (len(words), regions.shape[0]) and got.dtype == np.float32
    for q, w in enumerate(words):
        np.testing.assert_allclose(got[q], _definition(regions, w), rtol=0, atol=1e-5)
    assert not got[2].any()  # no words: every image scores 0


@pytest.mark.parametrize("max_bytes", [1, 2000, 1 << 30])
def test_top_lists_are_the_sorted_scores(data, max_bytes):
    regions, words = data
    ids, scores = mrsw.mrsw_top(regions, words, 10, max_bytes=max_bytes)
    full = mrsw.mrsw_scores(regions, words)
    assert ids.shape == scores.shape == (len(words), 10)
    for q in range(len(words)):
        expected = np.argsort(-full[q], kind="stable")[:10]
        np.testing.assert_array_equal(ids[q], expected)
        # chunk shapes change the BLAS path, so the last bit may differ from the one-chunk scores
        np.testing.assert_allclose(scores[q], full[q, expected], rtol=0, atol=1e-6)
    assert mrsw.mrsw_bruteforce(regions, words, 10, max_bytes=max_bytes) == ids.tolist()


def test_ties_go_to_the_lower_index_and_top_is_cut_to_the_collection():
    regions = np.zeros((9, 2, 4), dtype=np.float16)
    regions[:, :, 0] = 1.0  # every image scores the same
    query = [np.eye(4, dtype=np.float32)[:1]]
    ids, scores = mrsw.mrsw_top(regions, query, 5, max_bytes=40)  # several chunks
    assert ids.tolist() == [[0, 1, 2, 3, 4]] and np.all(scores == 1.0)
    ids, _ = mrsw.mrsw_top(regions, query, 100)
    assert ids.tolist() == [list(range(9))]
    assert mrsw.mrsw_rerank(regions, query[0], [7, 3, 5, 3], 10) == [3, 5, 7]


def test_rerank_orders_candidates_by_score(data):
    regions, words = data
    candidates = [40, 2, 17, 33, 8]
    exact = _definition(regions[candidates], words[3])
    expected = [candidates[i] for i in np.argsort(-exact, kind="stable")[:3]]
    assert mrsw.mrsw_rerank(regions, words[3], candidates, 3) == expected
    assert mrsw.mrsw_rerank(regions, words[3], [], 3) == []


def test_imports_with_numpy_alone():
    """The fast-plaid worker runs in its own environment, without teran_es or this project's
    torch; the reference must import there as a plain module from benchmarks/peers/."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['teran_es'] = None; "
        f"sys.path.insert(0, {str(BENCHMARKS / 'peers')!r}); import mrsw; "
        "import numpy as np; print(mrsw.mrsw_bruteforce(np.eye(3, dtype=np.float32)[:, None], [np.eye(3)[1:2]], 1))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[1]]"
