"""TERAN in torch: visual and textual pipelines, alignment scores, loss, checkpoints, import.

Import the submodules directly (``from teran_es.model.alignment import chunked_scores``);
this package file stays empty so that using the alignment math does not load transformers.
"""
