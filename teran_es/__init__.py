"""teran-es: cross-modal image search with TERAN alignment, surrogate text and exact rerank."""

__version__ = "0.1.0"
