"""Only the modules that talk to the server import the ``elasticsearch`` client library."""

from __future__ import annotations

import ast
from pathlib import Path

import teran_es

# The same list as docs/architecture.md gives.
IMPORTERS = {
    "index/elastic.py",
    "index/elastic_alias.py",
    "index/elastic_bulk.py",
    "index/elastic_rebuild.py",
    "index/elastic_server.py",
}


def _imports_elasticsearch(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "elasticsearch" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "elasticsearch":
            return True
    return False


def test_only_the_server_facing_index_modules_import_elasticsearch():
    package = Path(teran_es.__file__).parent
    found = {p.relative_to(package).as_posix() for p in package.rglob("*.py") if _imports_elasticsearch(p)}
    assert found == IMPORTERS
