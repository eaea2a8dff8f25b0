"""``teran-es ingest SOURCE``: images or region features in, feature store and index out."""

from __future__ import annotations

import logging
import sys

import click

from teran_es.cli.common import (
    emit_json,
    json_option,
    load_pipeline,
    os_error_message,
    pipeline_option,
    set_option,
)
from teran_es.errors import TeranError
from teran_es.index import BACKENDS


@click.command()
@click.argument("source", type=click.Path(exists=True), required=False)
@pipeline_option
@set_option
@click.option("--checkpoint", default=None, help="Trained model directory (overrides the pipeline's).")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default=None, help="Index backend.")
@click.option("--split", default=None, help="Only this split of the source (default: all of it).")
@click.option("--batch-size", default=64, show_default=True, help="Images encoded per batch.")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Instead of a SOURCE: index again the documents the index rejected (the dead-letter file), "
    "rebuilt from the feature store.",
)
@click.option(
    "--rebuild",
    is_flag=True,
    help="Instead of a SOURCE: rebuild the Elasticsearch index from the feature store into a new index "
    "behind the same alias (searches keep answering; the alias switches once the new index is checked).",
)
@json_option
def ingest(source, pipeline_path, overrides, checkpoint, backend, split, batch_size, retry_failed, rebuild,
           as_json):
    """Ingest SOURCE: encode, store, quantize, index.

    SOURCE is Parquet region features, a bottom-up folder, a folder of images (ids are the
    paths relative to it; needs a model with an image front end, or an [extractor] with a
    weights file) or a built OpenMoji collection (`teran-es openmoji info` shows where).
    Images that do not decode are skipped and listed in <workdir>/skipped.jsonl.

    Re-running the same command resumes: what is already stored and indexed is skipped.
    Documents the index rejects (after retries with backoff) are written to a dead-letter
    file; `--retry-failed` indexes them again and removes the file once that is done.

    `--rebuild` (Elasticsearch) re-encodes every stored image with the pipeline's current first
    stage and index settings into the alias's next index, switches the alias atomically when
    the new index is complete (count and fingerprints checked) and deletes the old one; when
    anything fails, the alias stays on the old index.
    """
    from tqdm import tqdm

    from teran_es.features.sources import iter_source_records
    from teran_es.indexer import Ingestor
    from teran_es.rebuild import rebuild_index
    from teran_es.retry import retry_failed as retry_dead_letters

    if (retry_failed or rebuild) == (source is not None) or (retry_failed and rebuild):
        raise click.UsageError("give a SOURCE to ingest, or --retry-failed, or --rebuild (one of them)")
    config = load_pipeline(pipeline_path, overrides, checkpoint=checkpoint, backend=backend)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The client logs each connection it revives at WARNING; retries are reported by the index.
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    try:
        with Ingestor(config) as ingestor:
            if retry_failed:
                retried = retry_dead_letters(ingestor)
            elif rebuild:
                with tqdm(desc="rebuild", unit="img", total=len(ingestor.store), file=sys.stderr, disable=None) as bar:
                    rebuilt = rebuild_index(ingestor, progress=bar.update)
            else:
                records = iter_source_records(
                    source,
                    split=split,
                    feature_dim=ingestor.model.config.region_feature_dim,
                    on_error=ingestor.note_bad_record,
                )
                with tqdm(desc="ingest", unit="img", file=sys.stderr, disable=None) as bar:
                    report = ingestor.ingest(records, batch_size=batch_size, progress=bar)
        if retry_failed:
            _report_retry(config, retried, as_json)
            return
        if rebuild:
            _report_rebuild(rebuilt, as_json)
            return
    except (TeranError, FileNotFoundError) as exc:  # FileNotFoundError: source, feature or model files
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        # A full disk or a read-only directory: what was committed stays, and the same command resumes.
        raise click.ClickException(
            f"ingest stopped: {os_error_message(exc)}. Check that the work directory "
            f"{config.resolved_workdir()} is writable and has free space, then run the same command "
            "again: it resumes where it stopped."
        ) from None
    payload = {"workdir": str(config.resolved_workdir()), "backend": config.index.backend, **report.to_dict()}
    if as_json:
        emit_json(payload)
    else:
        click.echo(
            f"ingested {report.seen} images into {config.index.backend} ({config.resolved_workdir()}): "
            f"{report.encoded} encoded, {report.indexed} indexed, {report.skipped_existing} already there, "
            f"{report.index_failed} failed; index holds {report.total_in_index} documents"
        )
        if report.normalised:
            click.echo(f"computed the query-bank normalisers of {report.normalised} images "
                       f"({report.timings['normalise']:.1f} s); in {ingestor.paths.normalisers}")
        if report.skipped_bad:
            click.echo(f"{report.skipped_bad} bad items were skipped; reasons in {ingestor.paths.skipped}")
        if report.dead_letter_path:
            click.echo(f"failed documents were written to {report.dead_letter_path}")


def _report_retry(config, retried, as_json: bool) -> None:
    if as_json:
        emit_json({"workdir": str(config.resolved_workdir()), "backend": config.index.backend, **retried.to_dict()})
        return
    if not retried.records:
        click.echo(f"nothing to retry: no failed documents in {retried.dead_letter_path}")
        return
    click.echo(
        f"retried {retried.images} images ({retried.records} failed documents): {retried.indexed} indexed, "
        f"{retried.failed} failed again; index holds {retried.total_in_index} documents"
    )
    if retried.not_in_store:
        click.echo(
            f"{len(retried.not_in_store)} images are not in the feature store (e.g. {retried.not_in_store[0]!r}): "
            "ingest their source again"
        )
    if retried.failed or retried.not_in_store:
        click.echo(f"what still fails is in {retried.dead_letter_path}")


def _report_rebuild(report, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
        return
    click.echo(
        f"rebuilt {report.alias!r}: {report.count} documents in {report.new_index!r} (checked), alias switched "
        f"from {report.old_index!r}, which was deleted ({report.seconds:.1f} s)"
    )
