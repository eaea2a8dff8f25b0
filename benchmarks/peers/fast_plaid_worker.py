"""Worker for the fast-plaid peer, run by the python of fast-plaid's own virtual environment.

fast-plaid 1.7.0.2110 is compiled against torch 2.11.0 and crashes under the project's torch, so
``fast_plaid_peer.FastPlaidPeer`` never imports it: it writes a JSON request and runs
``<venv>/bin/python fast_plaid_worker.py REQUEST.json``. This script imports only numpy, torch and
fast_plaid (never teran_es), does the work and writes the JSON response named in the request.
Arrays travel as .npy files in the peer's workdir. Progress and errors go to stderr, which the
peer forwards.

Requests (``"command"``):

* ``info``: library versions and ``FastPlaid.create`` / ``.search`` defaults.
* ``build``: ``docs`` = {path, offset, shape [N, R, D]} of a raw float16 array on disk (a .npy's
  data or the benchmark's own memmap), ``index_dir``, ``create`` = keyword arguments of
  ``FastPlaid.create``. The documents are handed over as N tensors that are views of one
  memory-mapped file, so nothing is copied up front; fast-plaid reads them in its own
  ``batch_size`` chunks. Response: ``seconds`` (the ``create`` call), peak RSS, settings.
* ``search``: ``index_dir``, ``queries`` (.npy [sum W_q, D] float32), ``lengths`` (.npy [Q]),
  ``k``, ``search`` = keyword arguments of ``FastPlaid.search``, ``mode`` in single / batched /
  both, ``out`` (prefix for the result .npy files). Single mode times every query alone
  (one ``search`` call each, ``n_processes=1``) after one untimed warm-up query that loads the
  index; batched mode times one call over all queries (``n_processes=threads``).
"""

from __future__ import annotations

import inspect
import json
import os
import resource
import sys
import time
import warnings
from pathlib import Path


def _log(msg: str) -> None:
    print(f"[fast-plaid worker] {msg}", file=sys.stderr, flush=True)


def _defaults(fn, skip: set[str]) -> dict:
    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        if name in skip or p.default is inspect.Parameter.empty:
            continue
        out[name] = p.default
    return out


def _versions() -> dict:
    import importlib.metadata

    import numpy
    import torch

    return {
        "fast_plaid": importlib.metadata.version("fast-plaid"),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": sys.version.split()[0],
    }


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def _info(req: dict) -> dict:
    from fast_plaid.search import FastPlaid

    return {
        "versions": _versions(),
        "create_defaults": _defaults(FastPlaid.create, {"self", "documents_embeddings", "metadata"}),
        "search_defaults": _defaults(FastPlaid.search, {"self", "queries_embeddings", "subset"}),
    }


def _build(req: dict) -> dict:
    import numpy as np
    import torch
    from fast_plaid.search import FastPlaid

    docs = req["docs"]
    shape = tuple(int(x) for x in docs["shape"])
    mm = np.memmap(docs["path"], dtype=np.float16, mode="r", offset=int(docs["offset"]), shape=shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memmap: fast-plaid only reads it
        flat = torch.from_numpy(mm)
    documents = list(flat.unbind(0))
    create = dict(req.get("create") or {})
    declared = _defaults(FastPlaid.create, {"self", "documents_embeddings", "metadata"})
    used = {**declared, **create}
    _log(f"create over {shape[0]} documents x {shape[1]} vectors x {shape[2]} dims, settings {create}")
    index = FastPlaid(index=req["index_dir"], device="cpu")
    t0 = time.perf_counter()
    index.create(documents_embeddings=documents, **create)
    seconds = time.perf_counter() - t0
    _log(f"create took {seconds:.1f} s")
    return {
        "seconds": seconds,
        "settings": used,
        "library_defaults": declared,
        "peak_rss_bytes": _peak_rss_bytes(),
        "versions": _versions(),
    }


def _search(req: dict) -> dict:
    import numpy as np
    import torch
    from fast_plaid.search import FastPlaid

    flat = np.load(req["queries"]).astype(np.float32, copy=False)
    lengths = np.load(req["lengths"]).astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    queries = [
        torch.from_numpy(np.ascontiguousarray(flat[a:b]))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    k = int(req["k"])
    kwargs = dict(req.get("search") or {})
    threads = int(req["threads"])
    mode = req.get("mode", "single")
    used = {**_defaults(FastPlaid.search, {"self", "queries_embeddings", "subset"}), **kwargs, "top_k": k}
    used.update(show_progress=False, n_processes=None)
    if mode in ("single", "both"):
        used["n_processes_single"] = 1
    if mode in ("batched", "both"):
        used["n_processes_batched"] = threads
    del used["n_processes"]

    t0 = time.perf_counter()
    index = FastPlaid(index=req["index_dir"], device="cpu")
    if queries:
        index.search(queries_embeddings=queries[:1], top_k=k, show_progress=False, n_processes=1, **kwargs)
    load_seconds = time.perf_counter() - t0

    def to_arrays(results):
        ids = np.full((len(results), k), -1, dtype=np.int64)
        scores = np.full((len(results), k), np.nan, dtype=np.float32)
        for i, hits in enumerate(results):
            for j, (doc, score) in enumerate(hits[:k]):
                ids[i, j] = doc
                scores[i, j] = score
        return ids, scores

    out = Path(req["out"])
    resp: dict = {"load_seconds": load_seconds, "settings": used, "versions": _versions()}
    if mode in ("single", "both"):
        results, latencies = [], []
        for q in queries:
            t = time.perf_counter()
            hits = index.search(queries_embeddings=[q], top_k=k, show_progress=False, n_processes=1, **kwargs)
            latencies.append(time.perf_counter() - t)
            results.append(hits[0])
        ids, scores = to_arrays(results)
        np.save(out.with_name(out.name + "-single-ids.npy"), ids)
        np.save(out.with_name(out.name + "-single-scores.npy"), scores)
        np.save(out.with_name(out.name + "-single-latencies.npy"), np.asarray(latencies, dtype=np.float64))
    if mode in ("batched", "both"):
        t = time.perf_counter()
        results = (
            index.search(
                queries_embeddings=queries, top_k=k, show_progress=False, n_processes=threads, **kwargs
            )
            if queries
            else []
        )
        resp["batched_seconds"] = time.perf_counter() - t
        ids, scores = to_arrays(results)
        np.save(out.with_name(out.name + "-batched-ids.npy"), ids)
        np.save(out.with_name(out.name + "-batched-scores.npy"), scores)
    resp["peak_rss_bytes"] = _peak_rss_bytes()
    return resp


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: fast_plaid_worker.py REQUEST.json", file=sys.stderr)
        return 2
    req = json.loads(Path(argv[1]).read_text())
    handlers = {"info": _info, "build": _build, "search": _search}
    command = req.get("command")
    if command not in handlers:
        print(f"unknown command {command!r}; expected one of {sorted(handlers)}", file=sys.stderr)
        return 2
    threads = int(req.get("threads") or os.cpu_count() or 1)
    req["threads"] = threads
    import torch

    torch.set_num_threads(threads)
    resp = handlers[command](req)
    target = Path(req["response"])
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(resp, indent=2, default=str) + "\n")
    tmp.replace(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
