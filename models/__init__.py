"""Trained models committed with the project, shipped as data of the package ``teran_es.models``:
``emoji-lite0-minilm`` (the demo's). ``openmoji-minilm``, the first OpenMoji model, stays in the
source tree for the benchmarks that were measured with it and is not shipped."""
