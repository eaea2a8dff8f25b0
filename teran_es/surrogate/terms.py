"""Spelling of surrogate-text terms and of per-region document ids.

After the CReLU split a D-dimensional vector has 2D non-negative components. Component ``i``
with ``i < D`` is the positive part of rotated axis ``i`` and is spelled ``p<i>``; component
``D + i`` is the negative part of axis ``i`` and is spelled ``n<i>`` (decimal, no leading
zeros). Names are at most 6 characters for D <= 10**5, contain no dots (Elasticsearch would
read a dotted key of a ``sparse_vector`` object as a path), and do not start with ``_``
(reserved for metadata fields).
"""

from __future__ import annotations

import re

_TERM_PATTERN = re.compile(r"([pn])(0|[1-9][0-9]*)")
_REGION_SUFFIX = "#r"


def term_name(component: int, dim: int) -> str:
    """Name of CReLU component ``component`` in [0, 2*dim) of a ``dim``-dimensional space."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if not 0 <= component < 2 * dim:
        raise ValueError(f"component {component} is outside [0, {2 * dim}) for dim={dim}")
    if component < dim:
        return f"p{component}"
    return f"n{component - dim}"


def parse_term(term: str, dim: int) -> int:
    """Inverse of :func:`term_name`: the component index in [0, 2*dim) spelled by ``term``."""
    match = _TERM_PATTERN.fullmatch(term) if isinstance(term, str) else None
    if match is None:
        raise ValueError(f"{term!r} is not a surrogate term (expected p<int> or n<int>, no leading zeros)")
    axis = int(match.group(2))
    if axis >= dim:
        raise ValueError(f"term {term!r} names axis {axis}, but dim is {dim}")
    return axis if match.group(1) == "p" else dim + axis


def vocabulary(dim: int) -> list[str]:
    """All 2*dim term names, indexed by component: ``vocabulary(dim)[c] == term_name(c, dim)``."""
    return [f"p{i}" for i in range(dim)] + [f"n{i}" for i in range(dim)]


def region_document_id(image_id: str, slot: int) -> str:
    """Id of the document holding region ``slot`` of image ``image_id`` (pooling="region")."""
    if slot < 0:
        raise ValueError(f"region slot must be >= 0, got {slot}")
    return f"{image_id}{_REGION_SUFFIX}{slot}"


def region_hits_needed(images: int, regions_per_image: int) -> int:
    """Region documents to ask an index for so that ``images`` distinct images can come back
    once grouped: every one of them may hold up to ``regions_per_image`` of the best hits."""
    return images * max(1, regions_per_image)


def parse_region_document_id(document_id: str) -> tuple[str, int]:
    """Inverse of :func:`region_document_id`: ``(image_id, slot)``."""
    image_id, sep, slot = document_id.rpartition(_REGION_SUFFIX)
    if not sep or not slot.isdigit() or not slot.isascii() or (len(slot) > 1 and slot[0] == "0"):
        raise ValueError(f"{document_id!r} is not a region document id (expected '<image_id>#r<slot>')")
    return image_id, int(slot)
