"""Surrogate text: region/word embeddings -> terms with integer frequencies (numpy only).

Two first stages: ``cell_encoder.py`` (cell tokens, the shape of MrSw; the default) and
``encoder.py`` (pooled scalar quantisation: the recipe, the meaning of Q and what its sparse
score approximates; fitted by ``scalar_fit.py``). Both save to the file format of ``saved.py``
and return a ``sparse.DocumentBatch``; ``loading.py`` fits and loads whichever a config or
file names.
"""

from teran_es.surrogate.cell_encoder import CellTokenEncoder
from teran_es.surrogate.encoder import SurrogateTextEncoder, check_config
from teran_es.surrogate.grouping import group_region_hits
from teran_es.surrogate.loading import FirstStageEncoder, fit_encoder, load_encoder
from teran_es.surrogate.ops import crelu, pool_regions, quantize_tf, random_rotation, top_k_mask
from teran_es.surrogate.query import MaxSumQuery
from teran_es.surrogate.sparse import DocumentBatch, SparseEncoding, dense_to_sparse
from teran_es.surrogate.terms import (
    parse_region_document_id,
    parse_term,
    region_document_id,
    term_name,
    vocabulary,
)

__all__ = [
    "CellTokenEncoder",
    "DocumentBatch",
    "FirstStageEncoder",
    "MaxSumQuery",
    "fit_encoder",
    "load_encoder",
    "SparseEncoding",
    "SurrogateTextEncoder",
    "check_config",
    "crelu",
    "dense_to_sparse",
    "group_region_hits",
    "parse_region_document_id",
    "parse_term",
    "pool_regions",
    "quantize_tf",
    "random_rotation",
    "region_document_id",
    "term_name",
    "top_k_mask",
    "vocabulary",
]
