"""How the OpenMoji collection is split and sampled: by stable hashes, the same everywhere.

A stable hash of (seed, group) picks train/val/test, where the group is the code sequence
without skin-tone modifiers and variation selectors (``emoji_codes.split_group``): the five
skin tones of an emoji, near-duplicate drawings, always share a split, and adding images to a
later release never moves an existing one.
"""

from __future__ import annotations

import hashlib

from teran_es.collections.emoji_codes import split_group

SPLITS: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.1), ("test", 0.1))


def _unit_hash(text: str) -> float:
    """A stable number in [0, 1) for ``text`` (same on every machine and Python run)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(code: str, seed: int = 0) -> str:
    """train/val/test for ``code``; every skin-tone variant gets its base emoji's split."""
    point = _unit_hash(f"openmoji-split:{seed}:{split_group(code)}")
    cumulative = 0.0
    for name, fraction in SPLITS:
        cumulative += fraction
        if point < cumulative:
            return name
    return SPLITS[-1][0]


def stable_sample(codes: list[str], limit: int | None) -> list[str]:
    """The first ``limit`` codes in a stable hash order: a varied sample, not 30 keycaps."""
    if limit is None or limit >= len(codes):
        return codes
    chosen = sorted(codes, key=lambda c: _unit_hash(f"openmoji-sample:{c}"))[: max(0, limit)]
    return sorted(chosen)
