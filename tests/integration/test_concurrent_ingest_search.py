"""Searches during an ingest, on both backends, opened the way `teran-es search` opens them
(``open_index(..., read_only=True)``) while a writer holds the index: every search answers, and
each sees at least every batch whose commit (``refresh``) had returned before it started.

The embedded reader moves its snapshot forward with ``refresh()`` (a read-only refresh loads
the latest commit); the Elasticsearch reader needs nothing: the server serves it.
"""

from __future__ import annotations

import threading
import time

import pytest

from teran_es.config import PipelineConfig
from teran_es.index import SurrogateDocument, open_index

BATCHES = 12
BATCH = 150
QUERY = {"shared": 1.0}


def batch_docs(b: int) -> list[SurrogateDocument]:
    return [SurrogateDocument(id=f"b{b:02d}-{i:04d}", terms={"shared": 1, f"own{b}-{i}": 2}) for i in range(BATCH)]


@pytest.fixture(params=["embedded", pytest.param("elasticsearch", marks=pytest.mark.elasticsearch)])
def config(request, tmp_path):
    config = PipelineConfig(name="concurrent", workdir=str(tmp_path / "work"))
    config.index.backend = request.param
    if request.param == "elasticsearch":
        config.elasticsearch.url = request.getfixturevalue("es_url")
        config.elasticsearch.bulk_chunk_docs = 50
        config.index.name = f"teran-test-concurrent-{tmp_path.name[-12:].lower()}"
    yield config
    if request.param == "elasticsearch":
        index = open_index(config, create=False)
        index.delete_index()
        index.close()


def test_searches_answer_during_an_ingest_and_see_every_committed_batch(config):
    writer = open_index(config, create=True, meta={})
    committed: list[int] = []  # batches whose refresh returned (the writer appends after it)
    writer_error: list[BaseException] = []
    observations: list[tuple[int, int]] = []  # (batches committed before the search, ids it saw)
    missing: list[str] = []
    done = threading.Event()

    def ingest() -> None:
        try:
            for b in range(BATCHES):
                assert writer.add(batch_docs(b)).failed == 0
                writer.refresh()
                committed.append(b)
                time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            writer_error.append(exc)
        finally:
            done.set()

    reader = open_index(config, create=False, read_only=True)
    thread = threading.Thread(target=ingest)
    thread.start()
    try:
        while True:
            finished = done.is_set()
            before = len(committed)
            if config.index.backend == "embedded":
                reader.refresh()  # a read-only snapshot moves to the latest commit
            hits = reader.search(QUERY, BATCHES * BATCH)
            seen = {h.id for h in hits}
            observations.append((before, len(seen)))
            expected = {d.id for b in range(before) for d in batch_docs(b)}
            missing.extend(sorted(expected - seen)[:3])
            if finished:
                break
    finally:
        thread.join()
        reader.close()
        writer.close()
    assert writer_error == []
    assert missing == [], f"a search missed committed documents: {missing[:5]}"
    assert observations[-1] == (BATCHES, BATCHES * BATCH)
    # the searches ran during the ingest, not only before or after it
    assert sum(1 for before, _ in observations if 0 < before < BATCHES) >= 3, observations
