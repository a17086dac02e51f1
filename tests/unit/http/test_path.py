"""Path normalisation (pyproxy.http.path), table-driven with Envoy's own cases
(test/common/http/path_utility_test.cc) plus the attack shapes a path-based DENY must survive."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyproxy.http.path import PathPolicy, Verdict, canonical_path, merge_slashes, normalize, unescape_slashes

ENVOY_CANONICAL = [
    ("/xyz", "/xyz"), ("/x/y/z", "/x/y/z"),
    ("/a/b/../c", "/a/c"), ("/a/b/./c", "/a/b/c"), ("a/b/../c", "/a/c"), ("/a/b/../../../../c", "/c"),
    ("/a/..\\c", "/c"), ("/%c0%af", "/%c0%af"), ("/%5c%25", "/%5c%25"), ("/a/b/%2E%2E/c", "/a/c"),
    ("/a/b/%2E./c", "/a/c"), ("/a/b/%2E/c", "/a/b/c"), ("..", "/"), ("/../a/b", "/a/b"), ("/./a/b", "/a/b"),
    ("/A/B/C", "/A/B/C"), ("/a/b/%2e%2e/c", "/a/c"), ("/a/%2F%2f/c", "/a/%2F%2f/c"),
    # beyond Envoy's table: trailing dot segments keep the directory form, unreserved escapes decode
    ("/a/.", "/a/"), ("/a/b/..", "/a/"), ("/%61dmin", "/admin"), ("/a%2db", "/a-b"), ("/", "/"),
]


@pytest.mark.parametrize("raw, expected", ENVOY_CANONICAL)
def test_canonical_path_matches_envoy(raw, expected):
    assert canonical_path(raw) == expected


@pytest.mark.parametrize("raw", ["/xyz/.%00../abc", "/xyz/%00.%00./abc", "/xyz/AAAAA%%0000/abc"])
def test_canonical_path_refuses_nul(raw):
    assert canonical_path(raw) is None


@pytest.mark.parametrize("raw, expected", [
    ("", ""), ("a//b/c", "a/b/c"), ("/a//b/c/", "/a/b/c/"), ("a//b/c/", "a/b/c/"), ("/a", "/a"),
    ("//a/b/c", "/a/b/c"), ("/a//b/c", "/a/b/c"), ("/a/b/c//", "/a/b/c/"), ("/a///b/c", "/a/b/c"),
    ("/a////b/c", "/a/b/c"), ("/a//b?a=///c", "/a/b?a=///c"), ("/a//b?", "/a/b?"), ("//a/?b", "/a/?b"),
    # beyond Envoy's table: the query starts at the first '?', even the first character; "//" alone is "/"
    ("/a?b//c?d", "/a?b//c?d"), ("?a//b", "?a//b"), ("//", "/"), ("///", "/"),
])
def test_merge_slashes_matches_envoy(raw, expected):
    assert merge_slashes(raw) == expected


def test_unescape_slashes_both_cases():
    assert unescape_slashes("/a%2Fb%2fc%5Cd%5ce%25") == "/a/b/c\\d\\e%25"


@pytest.mark.parametrize("action, target, verdict, out", [
    ("KEEP_UNCHANGED", "/a%2Fb", Verdict.FORWARD, "/a%2Fb"),
    ("IMPLEMENTATION_SPECIFIC_DEFAULT", "/a%2Fb", Verdict.FORWARD, "/a%2Fb"),
    ("REJECT_REQUEST", "/a%2Fb", Verdict.REJECT, "/a%2Fb"),
    ("REJECT_REQUEST", "/a/b?x=%2F", Verdict.FORWARD, "/a/b?x=%2F"),  # the query is not the path
    ("UNESCAPE_AND_FORWARD", "/a%2F..%2Fadmin", Verdict.FORWARD, "/admin"),
    ("UNESCAPE_AND_REDIRECT", "/a%2Fb", Verdict.REDIRECT, "/a/b"),
    ("UNESCAPE_AND_REDIRECT", "/a/b", Verdict.FORWARD, "/a/b"),
    ("UNESCAPE_AND_REDIRECT", "/a%20b", Verdict.FORWARD, "/a%20b"),  # a '%' that is no slash: nothing to do
    ("REJECT_REQUEST", "/a%25b", Verdict.FORWARD, "/a%25b"),
])
def test_escaped_slashes_action(action, target, verdict, out):
    assert normalize(target, PathPolicy(normalize_path=True, escaped_slashes_action=action)) == (verdict, out)


@pytest.mark.parametrize("attack", [
    "/api/../admin", "/api/%2e%2e/admin", "/api/%2E%2E/admin", "/./admin", "/api/..\\admin", "/%61dmin",
    "/api/./../admin", "/x/y/../../admin", "/../../admin", "/api/.%2e/admin",
])
def test_dot_segment_attacks_land_on_admin(attack):
    """Istio's DEFAULT normalisation (normalize_path) brings every one of these to `/admin` before matching."""
    assert normalize(attack, PathPolicy(normalize_path=True)) == (Verdict.FORWARD, "/admin")


@pytest.mark.parametrize("target, out", [
    ("/a/b?x=/../c?d", "/a/b?x=/../c?d"),  # a second '?' is still query
    ("?x/../y", "/?x/../y"),  # an empty path becomes "/"; the query is kept as written
])
def test_normalisation_leaves_the_query_alone(target, out):
    assert normalize(target, PathPolicy(normalize_path=True)) == (Verdict.FORWARD, out)


def test_escaped_slash_in_the_query_after_a_second_question_mark_is_not_rejected():
    policy = PathPolicy(escaped_slashes_action="REJECT_REQUEST")
    assert normalize("/a?x=%2F?y", policy) == (Verdict.FORWARD, "/a?x=%2F?y")


def test_merge_slashes_policy_runs_after_normalisation():
    policy = PathPolicy(normalize_path=True, merge_slashes=True)
    assert normalize("//api//v1/../x?q=//", policy) == (Verdict.FORWARD, "/api/x?q=//")


def test_defaults_are_inactive():
    assert not PathPolicy().active
    assert not PathPolicy(escaped_slashes_action="IMPLEMENTATION_SPECIFIC_DEFAULT").active
    assert PathPolicy(merge_slashes=True).active


@given(st.text(alphabet="/.ab%2eEfF5c\\", max_size=30))
def test_normalisation_is_idempotent(path):
    policy = PathPolicy(normalize_path=True, merge_slashes=True, escaped_slashes_action="UNESCAPE_AND_FORWARD")
    verdict, once = normalize(path, policy)
    if verdict is Verdict.FORWARD:
        assert normalize(once, policy) == (Verdict.FORWARD, once)


def test_normalisation_refuses_a_path_with_an_escaped_nul():
    assert normalize("/a/%00/b?q", PathPolicy(normalize_path=True)) == (Verdict.REJECT, "/a/%00/b?q")
