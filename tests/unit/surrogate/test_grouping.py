import pytest

from teran_es.surrogate import group_region_hits


def test_group_by_max_sorted_with_id_tiebreak():
    hits = [("a#r0", 1.0), ("b#r3", 5.0), ("a#r2", 7.0), ("c#r1", 5.0), ("b#r0", 2.0)]
    assert group_region_hits(hits) == [("a", 7.0), ("b", 5.0), ("c", 5.0)]
    assert group_region_hits(hits, k=2) == [("a", 7.0), ("b", 5.0)]


def test_group_by_sum():
    hits = [("a#r0", 1.0), ("a#r1", 2.0), ("b#r0", 2.5)]
    assert group_region_hits(hits, reduce="sum") == [("a", 3.0), ("b", 2.5)]


def test_image_ids_may_contain_the_separator():
    assert group_region_hits([("x#r1#r2", 1.0)]) == [("x#r1", 1.0)]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="reduce"):
        group_region_hits([], reduce="mean")
    with pytest.raises(ValueError, match="region document id"):
        group_region_hits([("plain-id", 1.0)])
