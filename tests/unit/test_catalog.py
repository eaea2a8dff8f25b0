"""The collection catalog: image files served only from inside the collection directory."""

from __future__ import annotations

import json

import pytest

from teran_es.catalog import Catalog, UnsafePathError, contained_path, read_attribution


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "collection"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.png").write_bytes(b"a")
    (tmp_path / "secret.png").write_bytes(b"s")
    (root / "images" / "out.png").symlink_to(tmp_path / "secret.png")
    (root / "images" / "in.png").symlink_to(root / "images" / "a.png")
    (root / "escape-dir").symlink_to(tmp_path, target_is_directory=True)
    return root


def test_paths_inside_the_collection_are_given_resolved(tree):
    assert contained_path("images/a.png", tree) == (tree / "images" / "a.png").resolve()
    assert contained_path(tree / "images" / "a.png", tree) == (tree / "images" / "a.png").resolve()
    assert contained_path("images/../images/a.png", tree) == (tree / "images" / "a.png").resolve()
    assert contained_path("images/in.png", tree) == (tree / "images" / "a.png").resolve()


@pytest.mark.parametrize("path", ["../secret.png", "images/../../secret.png", "images/out.png",
                                  "escape-dir/secret.png", "/etc/passwd"])
def test_paths_that_leave_the_collection_are_refused(tree, path):
    with pytest.raises(UnsafePathError, match="outside the collection directory"):
        contained_path(path, tree)


def test_an_absolute_path_elsewhere_is_refused(tree):
    with pytest.raises(UnsafePathError):
        contained_path(tree.parent / "secret.png", tree)


def test_attribution_comes_from_the_manifest(tmp_path):
    assert read_attribution(tmp_path) is None
    (tmp_path / "manifest.json").write_text(json.dumps({"attribution": "drawn by someone, CC BY"}))
    assert read_attribution(tmp_path) == "drawn by someone, CC BY"
    (tmp_path / "manifest.json").write_text("not json")
    assert read_attribution(tmp_path) is None


def test_no_collection_means_an_empty_catalog(tmp_path):
    from teran_es.config import load_config

    catalog = Catalog.open(load_config(None, [f"data.path={tmp_path / 'missing'}", "data.format=parquet"]))
    assert catalog.images == {} and catalog.root is None and catalog.captions() == []
