"""The alias a pipeline's Elasticsearch index is reached by, and the concrete indexes behind it.

A pipeline names its index ``name``; on the server ``name`` is an alias on exactly one
concrete index ``name-000001``, ``name-000002``, ... (one per build: a rebuild makes the next
one and switches the alias atomically, ``elastic_rebuild.py``). Searches and ingests address
the alias only, so a switch is seen by every client at once. An index built by an older
teran-es is a concrete index named ``name`` itself: it keeps working, and a rebuild replaces
it by an alias in the same atomic step. One of the modules that import ``elasticsearch``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import elasticsearch
from elasticsearch import Elasticsearch

from teran_es.index.base import IndexMismatchError, IndexUnavailableError
from teran_es.index.elastic_server import translated_errors

GENERATION_DIGITS = 6
# How long opening an existing index waits for a red index to turn yellow (a node restarting).
RED_WAIT = "5s"


class AliasConflictError(IndexMismatchError):
    """The alias points at more than one index: teran-es cannot tell which one to use."""


def generation_name(alias: str, generation: int) -> str:
    """The concrete index of build ``generation`` (1, 2, ...) behind ``alias``: ``alias-000002``."""
    if generation < 1:
        raise ValueError(f"generation {generation} must be at least 1")
    return f"{alias}-{generation:0{GENERATION_DIGITS}d}"


def generation_of(alias: str, index: str) -> int | None:
    """The build number of ``index`` behind ``alias``, or None when it is not named like one."""
    match = re.fullmatch(re.escape(alias) + rf"-(\d{{{GENERATION_DIGITS}}})", index)
    return int(match.group(1)) if match else None


def next_generation(alias: str, existing: Iterable[str]) -> str:
    """The concrete index name a new build behind ``alias`` gets: one past the highest existing."""
    generations = [g for g in (generation_of(alias, name) for name in existing) if g is not None]
    return generation_name(alias, max(generations, default=0) + 1)


@dataclass(frozen=True)
class Target:
    """What a pipeline's index name resolves to on the server."""

    alias: str  # the name the pipeline uses
    concrete: str  # the one index behind it
    legacy: bool  # True: ``alias`` is itself a concrete index (built before aliases)


def resolve(client: Elasticsearch, name: str, where: str) -> Target | None:
    """The index behind ``name`` (an alias on one index, or an older teran-es's concrete index),
    or None when neither exists. An alias on several indexes is an ``AliasConflictError``."""
    with translated_errors("resolving the index alias", where, name):
        if client.indices.exists_alias(name=name):
            indexes = sorted(client.indices.get_alias(name=name))
            if len(indexes) != 1:
                raise AliasConflictError(
                    f"alias {name!r} on {where} points at {len(indexes)} indexes ({', '.join(indexes)}): "
                    f"searches would mix them and writes have no target. Keep the one you want, e.g. "
                    f"POST _aliases {{\"actions\": [{{\"remove\": {{\"index\": \"{indexes[0]}\", "
                    f"\"alias\": \"{name}\"}}}}]}}, or rebuild with `teran-es ingest --rebuild`."
                )
            return Target(name, indexes[0], legacy=False)
        if client.indices.exists(index=name):
            return Target(name, name, legacy=True)
    return None


def check_not_red(client: Elasticsearch, target: Target, where: str) -> None:
    """Refuse an index with a primary shard that no live node holds (waits ``RED_WAIT`` for it)."""
    try:
        with translated_errors("checking the index's health", where, target.alias):
            health = client.options(ignore_status=408).cluster.health(
                index=target.concrete, wait_for_status="yellow", timeout=RED_WAIT
            )
    except IndexUnavailableError as exc:
        if isinstance(exc.__cause__, elasticsearch.AuthorizationException):
            return  # credentials without the `monitor` privilege: searches still refuse partial results
        raise
    if health.get("status") == "red":
        raise IndexUnavailableError(
            f"Elasticsearch index {target.concrete!r} (alias {target.alias!r}) on {where} is red: "
            f"{health.get('unassigned_primary_shards', '?')} primary shard(s) have no live copy, so searches "
            "would miss documents and ingests would fail. Start the nodes that are down (`teran-es elasticsearch "
            "status` lists a local cluster's), or give the index replicas (elasticsearch.replicas) and rebuild."
        )


def switch(client: Elasticsearch, old: Target | None, new_index: str, where: str) -> None:
    """Point ``alias`` at ``new_index`` in one atomic request. The old index leaves the alias
    (``must_exist``: fails when someone moved the alias meanwhile) or, for an older teran-es's
    concrete index of the alias's own name, is deleted in that same request."""
    alias = old.alias if old else None
    if alias is None:
        raise ValueError("switch needs the current target")
    actions: list[dict] = [{"add": {"index": new_index, "alias": alias}}]
    if old is not None and old.legacy:
        actions.append({"remove_index": {"index": old.concrete}})
    elif old is not None:
        actions.append({"remove": {"index": old.concrete, "alias": alias, "must_exist": True}})
    with translated_errors("switching the alias", where, alias):
        client.indices.update_aliases(actions=actions)


def concrete_indexes(client: Elasticsearch, name: str, where: str) -> list[str]:
    """Every concrete index ``name`` stands for: those behind the alias, or ``name`` itself."""
    with translated_errors("listing the indexes behind the alias", where, name):
        if client.indices.exists_alias(name=name):
            return sorted(client.indices.get_alias(name=name))
        if client.indices.exists(index=name):
            return [name]
    return []
