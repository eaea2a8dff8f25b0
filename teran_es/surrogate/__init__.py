"""Surrogate text: region/word embeddings -> terms with integer frequencies (numpy only).

See ``encoder.py`` for the recipe, the meaning of Q and what the sparse score approximates.
"""

from teran_es.surrogate.encoder import DocumentBatch, SurrogateTextEncoder, check_config
from teran_es.surrogate.grouping import group_region_hits
from teran_es.surrogate.ops import crelu, pool_regions, quantize_tf, random_rotation, top_k_mask
from teran_es.surrogate.sparse import SparseEncoding, dense_to_sparse
from teran_es.surrogate.terms import (
    is_acceptable_term,
    parse_region_document_id,
    parse_term,
    region_document_id,
    term_name,
    term_problem,
    vocabulary,
)

__all__ = [
    "DocumentBatch",
    "SparseEncoding",
    "SurrogateTextEncoder",
    "check_config",
    "crelu",
    "dense_to_sparse",
    "group_region_hits",
    "is_acceptable_term",
    "parse_region_document_id",
    "parse_term",
    "pool_regions",
    "quantize_tf",
    "random_rotation",
    "region_document_id",
    "term_name",
    "term_problem",
    "top_k_mask",
    "vocabulary",
]
