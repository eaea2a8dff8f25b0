"""Zero-downtime rebuild of an Elasticsearch index behind its alias.

A new concrete index (the alias's next generation) is created and filled while the alias
still points at the old one, so searches keep answering from the old index. When the new one
is complete and checked (its document count is what was sent, no document failed, its
fingerprints are the pipeline's), the alias is switched in one atomic request and, after a
grace period, the old index is deleted. Any failure before the switch deletes the new index and
leaves the alias where it was. What goes into the new index is the caller's (``teran_es.rebuild``). One of the
modules that import ``elasticsearch``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import elasticsearch

from teran_es.index import elastic_alias
from teran_es.index.base import IndexError_
from teran_es.index.elastic import ElasticIndex
from teran_es.index.elastic_server import check_index, create_index, translated_errors


class RebuildError(IndexError_):
    """The new index could not be built or did not pass its checks; the alias was not moved."""


@dataclass
class RebuildReport:
    """What a rebuild did."""

    alias: str
    old_index: str
    new_index: str
    sent: int = 0  # documents sent to the new index
    failed: int = 0  # documents the new index rejected
    count: int = 0  # documents the new index holds after the refresh
    switched: bool = False
    old_removed: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# fill(new_index) -> (documents sent, documents that failed)
Filler = Callable[[ElasticIndex], tuple[int, int]]

# A search that resolved the alias to the old index just before the switch still runs its
# shard requests there; deleting the old index at once fails it ("index does not exist": seen
# once under 8 query streams on a 3-node cluster). Searches finish in well under a second
# here, so the old index is kept this long after the switch before it is deleted.
OLD_INDEX_GRACE_SECONDS = 5.0


def rebuild_behind_alias(
    current: ElasticIndex, meta: Mapping[str, Any], fill: Filler, grace_seconds: float = OLD_INDEX_GRACE_SECONDS
) -> RebuildReport:
    """Build the next generation of ``current``'s alias with ``fill``, check it, switch the alias
    to it atomically and, ``grace_seconds`` later (searches in flight finish on it), delete the
    old index. ``current`` is the open index of the alias (or of an older teran-es's concrete
    index of that name, which the switch replaces by the alias). Raises ``RebuildError`` (alias
    untouched, new index deleted) when anything fails before the switch."""
    started = time.perf_counter()
    client, where, old = current.client, current.where, current.target
    with translated_errors("listing the alias's indexes", where, old.alias):
        existing = list(client.indices.get(index=f"{old.alias}-*", ignore_unavailable=True, allow_no_indices=True))
    new_name = elastic_alias.next_generation(old.alias, existing)
    report = RebuildReport(alias=old.alias, old_index=old.concrete, new_index=new_name)
    created = False
    try:
        created = create_index(client, new_name, current.config, meta, where)
        if not created:
            raise RebuildError(f"index {new_name!r} already exists on {where}: another rebuild runs? Try again later.")
        new = ElasticIndex.open(
            current.config, new_name, create=False, meta=meta, client=client,
            dead_letter_path=current.dead_letter_path, formulation=current.formulation,
        )
        report.sent, report.failed = fill(new)
        new.refresh()
        report.count = new.count()
        if report.failed:
            raise RebuildError(f"{report.failed} documents were rejected by the new index {new_name!r} "
                               f"(see {current.dead_letter_path})")
        if report.count != report.sent or report.sent == 0:
            raise RebuildError(f"the new index {new_name!r} holds {report.count} documents, but {report.sent} "
                               "were sent")
        check_index(client, new_name, meta, where)  # the fingerprints it was created with are the pipeline's
        current_now = elastic_alias.resolve(client, old.alias, where)
        if current_now != old:
            raise RebuildError(f"alias {old.alias!r} moved to {current_now} during the rebuild; not switching")
        elastic_alias.switch(client, old, new_name, where)
        report.switched = True
    except BaseException as exc:
        if created and not report.switched:
            with contextlib.suppress(elasticsearch.ApiError, elasticsearch.TransportError):
                client.indices.delete(index=new_name, ignore_unavailable=True)
        if isinstance(exc, Exception):
            raise RebuildError(
                f"rebuilding {old.alias!r} failed, so the alias still points at {old.concrete!r}"
                f"{' and the partial ' + repr(new_name) + ' was deleted' if created else ''}: {exc}"
            ) from exc
        raise
    if not old.legacy:  # an older teran-es's index went away in the switch itself
        time.sleep(max(0.0, grace_seconds))
        with translated_errors("deleting the old index", where, old.concrete):
            client.indices.delete(index=old.concrete, ignore_unavailable=True)
    report.old_removed = True
    report.seconds = time.perf_counter() - started
    return report
