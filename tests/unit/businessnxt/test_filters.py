"""Pure filter, sort, paging and key-planning rules of the sandbox."""
from __future__ import annotations

import pytest

from connectors.businessnxt import filters as F

FIELDS = {"n": "int", "s": "str", "d": "decimal", "t": "datetime"}
ROWS = [
    {"n": 1, "s": "Alpha AS", "d": 1.5, "t": "2026-01-01T10:00:00.0000000"},
    {"n": 2, "s": "beta", "d": 2.0, "t": "2026-01-01T10:00:00.5000000"},
    {"n": 3, "s": None, "d": None, "t": None},
    {"n": 4, "s": "alphabet", "d": 10.0, "t": "2026-06-01T00:00:00.0000001"},
]


def ns(flt):
    p = F.compile_filter(flt, FIELDS)
    return [r["n"] for r in ROWS if p(r)]


@pytest.mark.parametrize("flt,expected", [
    ({"n": {"_eq": 2}}, [2]),
    ({"n": {"_not_eq": 2}}, [1, 3, 4]),
    ({"n": {"_gt": 2}}, [3, 4]),
    ({"n": {"_gte": 2}}, [2, 3, 4]),
    ({"n": {"_lt": 2}}, [1]),
    ({"n": {"_lte": 2}}, [1, 2]),
    ({"n": {"_in": [1, 4, 9]}}, [1, 4]),
    ({"n": {"_not_in": [1, 4]}}, [2, 3]),
    ({"s": {"_like": "alpha%"}}, [1, 4]),
    ({"s": {"_like": "%AS"}}, [1]),
    ({"s": {"_like": "beta"}}, [2]),
    ({"d": {"_between": {"from": 1.5, "to": 2}}}, [1, 2]),
    ({"s": {"_eq": None}}, [3]),
    ({"t": {"_gte": "2026-01-01T10:00:00.5"}}, [2, 4]),
    ({"t": {"_gt": "2026-01-01T10:00:00.5000000"}}, [4]),
    ({"_and": [{"n": {"_gt": 1}}, {"d": {"_lt": 5}}]}, [2]),
    ({"_or": [{"n": {"_eq": 1}}, {"s": {"_like": "%bet"}}]}, [1, 4]),
    ({"n": {"_gte": 2}, "d": {"_gt": 2}}, [4]),
    (None, [1, 2, 3, 4]),
])
def test_operators(flt, expected):
    assert ns(flt) == expected


def test_errors():
    with pytest.raises(F.FilterError):
        F.compile_filter({"nope": {"_eq": 1}}, FIELDS)
    with pytest.raises(F.FilterError):
        F.compile_filter({"n": {"_regex": 1}}, FIELDS)
    with pytest.raises(F.FilterError):
        F.compile_filter({"t": {"_gt": "yesterday"}}, FIELDS)


def test_candidate_values_plans_key_lookups():
    assert F.candidate_values({"n": {"_eq": 3}}, "n") == {3}
    assert F.candidate_values({"_and": [{"n": {"_in": [1, 2, 3]}}, {"n": {"_in": [2, 3, 4]}}]}, "n") == {2, 3}
    assert F.candidate_values({"_or": [{"n": {"_eq": 1}}, {"n": {"_in": [5]}}]}, "n") == {1, 5}
    assert F.candidate_values({"_or": [{"n": {"_eq": 1}}, {"s": {"_eq": "x"}}]}, "n") is None
    assert F.candidate_values({"n": {"_gt": 1}}, "n") is None
    assert F.candidate_values({"s": {"_eq": "x"}, "n": {"_eq": 2}}, "n") == {2}


def test_sort_nulls_first_desc_and_tiebreak():
    rows = F.sort_rows(ROWS, [{"t": "ASC"}], ("n",))
    assert [r["n"] for r in rows] == [3, 1, 2, 4]
    rows = F.sort_rows(ROWS, [{"d": "DESC"}], ("n",))
    assert [r["n"] for r in rows] == [4, 2, 1, 3]
    same = [{"n": 2, "k": 1}, {"n": 1, "k": 1}]
    assert [r["n"] for r in F.sort_rows(same, [{"k": "ASC"}], ("n",))] == [1, 2]


def test_page_forward_backward_skip_and_errors():
    assert F.page(10, first=3) == (0, 3)
    assert F.page(10, first=3, after=F.encode_cursor(3)) == (3, 6)
    assert F.page(10, last=3) == (7, 10)
    assert F.page(10, last=3, before=F.encode_cursor(8)) == (4, 7)
    assert F.page(10, skip=8, first=5) == (8, 10)
    assert F.page(10_000) == (0, 5000)
    assert F.encode_cursor(1) == "MQ=="
    for bad in ({"first": 0}, {"last": -1}, {"skip": 0}):
        with pytest.raises(F.FilterError, match="positive"):
            F.page(10, **bad)
    with pytest.raises(F.FilterError):
        F.page(10, after="!!!")


@pytest.mark.parametrize("flt,expected", [
    (None, None),
    ({"n": {"_gte": 2}}, None),  # another field
    ({"t": {"_gte": "2026-01-01T10:00"}}, "2026-01-01T10:00:00.0000000"),
    ({"t": {"_gt": "2026-01-01T10:00:00.5"}}, "2026-01-01T10:00:00.5000000"),
    ({"t": {"_eq": "2026-01-01T10:00:00"}}, "2026-01-01T10:00:00.0000000"),
    ({"t": {"_between": {"from": "2026-01-02T00:00:00", "to": "2026-02-01T00:00:00"}}},
     "2026-01-02T00:00:00.0000000"),
    ({"t": {"_lte": "2026-01-01T10:00:00"}}, None),  # an upper bound only
    # the keyset page of a poll: the highest bound of an _and
    ({"_and": [{"t": {"_gte": "2026-01-01T10:00:00"}},
               {"_or": [{"t": {"_gt": "2026-01-01T10:00:00.5"}}, {"n": {"_gt": 3}}]}]},
     "2026-01-01T10:00:00.0000000"),
    # an _or bounds only when every alternative does (then by the lowest)
    ({"_or": [{"t": {"_gte": "2026-03-01T00:00:00"}}, {"t": {"_gte": "2026-02-01T00:00:00"}}]},
     "2026-02-01T00:00:00.0000000"),
    ({"_or": [{"t": {"_gte": "2026-03-01T00:00:00"}}, {"n": {"_eq": 1}}]}, None),
])
def test_lower_bound_is_what_every_matching_row_is_at_least(flt, expected):
    assert F.lower_bound(flt, "t", "datetime") == expected
    if expected is not None:  # the bound never excludes a matching row
        assert all(r["t"] is not None and r["t"] >= expected for r in ROWS if F.compile_filter(flt, FIELDS)(r))
