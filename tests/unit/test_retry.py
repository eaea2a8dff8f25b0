"""`retry.retry_failed` on the embedded backend: the dead-letter file is read (torn lines
dropped), the images are indexed again from the feature store, and the file is moved aside
during the retry and removed only after it."""

from __future__ import annotations

import json

import pytest

from teran_es.index import dead_letter_path, open_index
from teran_es.indexer import Ingestor
from teran_es.retry import RETRYING_SUFFIX, retry_failed


@pytest.fixture
def ingested(tiny_pipeline, tmp_path, ingest_tiny, tiny_quantizer):
    """40 images ingested into the embedded index; then 5 of them are taken out of the index and
    named in the dead-letter file, as if the index had rejected them."""
    config = tiny_pipeline(
        f"workdir={tmp_path / 'work'}",
        *tiny_quantizer,
    )
    model, records, _ = ingest_tiny(config)
    rejected = [r.image_id for r in records[10:15]]
    index = open_index(config)
    documents = {doc_id: index.get(doc_id) for doc_id in rejected}
    assert index.delete(rejected) == 5
    index.close()
    lines = [
        json.dumps(
            {"id": d.id, "error": "rejected", "document": {"terms": dict(d.terms), "path": "p/" + d.id, "caption": "c"}}
        )
        for d in documents.values()
    ]
    return config, model, rejected, lines


def retry(config, model):
    with Ingestor(config, model=model) as ingestor:
        return retry_failed(ingestor)


def test_retry_indexes_what_failed_and_keeps_only_what_cannot_be_rebuilt(ingested):
    config, model, rejected, lines = ingested
    path = dead_letter_path(config)
    ghost = json.dumps({"id": "never-stored", "error": "rejected", "document": {"terms": {"p1": 1}}})
    path.write_text("\n".join([*lines, ghost, '{"id": "torn-li']) + "\n")

    report = retry(config, model)
    assert (report.records, report.unreadable_lines, report.images) == (6, 1, 6)
    assert (report.indexed, report.failed, report.not_in_store) == (5, 0, ["never-stored"])
    assert report.total_in_index == 40
    # Only the image that has nothing to be rebuilt from is left, for a re-run of its source.
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["never-stored"]
    assert not path.with_name(path.name + RETRYING_SUFFIX).exists()
    index = open_index(config, create=False, read_only=True)
    try:
        assert index.existing_ids(rejected) == set(rejected)
        assert index.get(rejected[0]).path == "p/" + rejected[0]  # what a hit shows comes back too
    finally:
        index.close()


def test_an_interrupted_retry_is_picked_up_by_the_next_one(ingested):
    config, model, rejected, lines = ingested
    path = dead_letter_path(config)
    # A retry stopped mid-way left its file aside; new failures were written since.
    path.with_name(path.name + RETRYING_SUFFIX).write_text("\n".join(lines[:3]) + "\n")
    path.write_text("\n".join(lines[3:]) + "\n")
    report = retry(config, model)
    assert (report.records, report.indexed, report.failed) == (5, 5, 0)
    assert not path.exists() and not path.with_name(path.name + RETRYING_SUFFIX).exists()


def test_nothing_to_retry(ingested):
    config, model, _, _ = ingested
    report = retry(config, model)
    assert (report.records, report.indexed) == (0, 0)
    assert report.dead_letter_path == str(dead_letter_path(config))
