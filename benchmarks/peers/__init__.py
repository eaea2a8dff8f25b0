"""Peer retrieval engines the scale benchmark compares teran-es against (issue 6).

Every peer has the same interface (see each module's docstring for its settings):

* ``Peer.build(regions, workdir, **settings) -> dict`` with ``seconds``, ``bytes``, ``settings``,
  ``version``, ``loaded_from_cache``; ``regions`` is ``[N, R, D]`` float16/float32 (np.memmap ok,
  streamed in chunks);
* ``Peer.search(query_words, k, **settings) -> (ids per query, latency per query in seconds)``;
* ``Peer.search_batched(query_words, k, **settings) -> (ids per query, total seconds)``.

Modules: ``faiss_peer`` (``FaissPeer``: IVF-PQ over all region vectors, per-word kNN, MrSw-like
aggregation) and ``fast_plaid_peer`` (``FastPlaidPeer``: PLAID multi-vector index in its own
virtual environment, driven through ``fast_plaid_worker.py``).

The peers return *candidates*; the benchmark reranks them with the exact MrSw score itself.
``mrsw`` is the benchmarks' one numpy reference for that score (brute force, top lists, rerank);
``_util`` holds the peers' shared helpers. Both import nothing beyond numpy.
"""
