"""Trained models committed with the project (``openmoji-minilm``: the demo's), shipped as data of
the package ``teran_es.models``."""
