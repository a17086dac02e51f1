"""pyproxy.http.headers.Headers: the ordered, case-insensitive multimap every filter reads and edits."""
from __future__ import annotations

from hypothesis import given, strategies as st

from pyproxy.http.headers import Headers


def test_names_are_lower_cased_and_order_and_duplicates_kept():
    h = Headers([("Set-Cookie", "a=1"), ("X-A", "1"), ("set-cookie", "b=2")])
    assert h.items() == [("set-cookie", "a=1"), ("x-a", "1"), ("set-cookie", "b=2")]
    assert list(h) == h.items() and len(h) == 3
    assert h.get_all("set-cookie") == ["a=1", "b=2"]


def test_get_joins_repeated_fields_and_get_first_does_not():
    h = Headers([("accept", "a"), ("accept", "b")])
    assert h.get("accept") == "a,b" and h.get_first("accept") == "a"
    assert h.get("missing") is None and h.get("missing", "d") == "d" and h.get_first("missing") is None


def test_contains():
    h = Headers([("x-a", "")])
    assert "x-a" in h and "x-b" not in h


def test_set_replaces_every_field_keeping_the_first_position():
    h = Headers([("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("a", "5")])
    h.set("A", "9")
    assert h.items() == [("a", "9"), ("b", "2"), ("c", "4")]
    h.set("d", "0")
    assert h.items()[-1] == ("d", "0")
    h.set("b", "7")
    assert h.items() == [("a", "9"), ("b", "7"), ("c", "4"), ("d", "0")]


def test_set_of_a_single_field_edits_in_place():
    """The common case (no duplicate to drop) replaces the value without rebuilding the list."""
    items = [("a", "1"), ("b", "2")]
    h = Headers.from_lowered(items)
    h.set("b", "3")
    assert h._items is items and items == [("a", "1"), ("b", "3")]


def test_add_appends_lower_cased():
    h = Headers()
    h.add("X-A", "1")
    h.add("x-a", "2")
    assert h.items() == [("x-a", "1"), ("x-a", "2")]


def test_remove_reports_whether_anything_went():
    h = Headers([("a", "1"), ("b", "2"), ("a", "3")])
    assert h.remove("A") is True and h.items() == [("b", "2")]
    assert h.remove("a") is False and h.items() == [("b", "2")]


def test_remove_names_keeps_the_same_list_when_nothing_matches():
    items = [("a", "1"), ("b", "2")]
    h = Headers.from_lowered(items)
    h.remove_names(frozenset({"c"}))
    assert h._items is items  # no copy on the common path
    h.remove_names(frozenset({"a", "c"}))
    assert h.items() == [("b", "2")]


def test_remove_many_takes_names_in_any_case():
    h = Headers([("a", "1"), ("b", "2"), ("c", "3")])
    h.remove_many(["A", "B"])
    assert h.items() == [("c", "3")]
    h = Headers([("a", "1"), ("b", "2")])
    h.remove_many(frozenset({"B"}))
    assert h.items() == [("a", "1")]


def test_copy_is_independent_and_equal():
    h = Headers([("a", "1")])
    c = h.copy()
    assert c == h and c is not h
    c.add("b", "2")
    assert h.items() == [("a", "1")] and c != h
    assert h != [("a", "1")]  # only Headers compare equal
    assert repr(h) == "Headers([('a', '1')])"


NAMES = ("host", "x-a", "X-A", "te", "connection", "set-cookie")
EDITS = st.lists(st.tuples(st.sampled_from(("add", "set", "remove", "remove_names", "remove_many", "in")),
                           st.sampled_from(NAMES), st.sampled_from(NAMES)), max_size=25)


@given(start=st.lists(st.tuples(st.sampled_from(NAMES), st.just("v")), max_size=6), edits=EDITS)
def test_membership_always_agrees_with_the_fields_whatever_edits_came_between(start, edits):
    """`in` answers from a set of names kept beside the fields (built at the first test, updated by each edit):
    after any sequence of edits it must say exactly what a scan of the fields says."""
    h = Headers(start)
    for op, a, b in edits:
        if op == "add":
            h.add(a, "1")
        elif op == "set":
            h.set(a, "2")
        elif op == "remove":
            h.remove(a)
        elif op == "remove_names":
            h.remove_names(frozenset({a.lower(), b.lower()}))
        elif op == "remove_many":
            h.remove_many([a, b])
        for name in {n.lower() for n in NAMES}:
            assert (name in h) == any(k == name for k, _ in h.items()), (op, a, b, h)
    assert ("x-a" in h.copy()) == ("x-a" in h)


@given(start=st.lists(st.tuples(st.sampled_from(NAMES), st.just("v")), max_size=6),
       edits=st.lists(st.tuples(st.sampled_from(("add", "set", "remove", "remove_names", "in", "has_any")),
                                st.sampled_from(NAMES), st.sampled_from(NAMES)), max_size=25))
def test_every_read_and_edit_agrees_with_a_plain_list_whatever_came_before(start, edits):
    """Once the name set exists (after the first `in` or `has_any`), misses are answered from it: reads, edits and
    their return values must still be exactly what a plain list of fields gives."""
    h = Headers(start)
    ref = [(k.lower(), v) for k, v in start]
    for i, (op, a, b) in enumerate(edits):
        la, lb = a.lower(), b.lower()
        if op == "add":
            h.add(a, str(i))
            ref.append((la, str(i)))
        elif op == "set":
            h.set(a, str(i))
            first = next((j for j, (k, _) in enumerate(ref) if k == la), None)
            ref = ref + [(la, str(i))] if first is None else \
                [*ref[:first], (la, str(i)), *[(k, v) for k, v in ref[first + 1:] if k != la]]
        elif op == "remove":
            assert h.remove(a) == any(k == la for k, _ in ref)
            ref = [(k, v) for k, v in ref if k != la]
        elif op == "remove_names":
            h.remove_names(frozenset({la, lb}))
            ref = [(k, v) for k, v in ref if k not in (la, lb)]
        elif op == "in":
            assert (la in h) == any(k == la for k, _ in ref)
        else:
            assert h.has_any(frozenset({la, lb})) == any(k in (la, lb) for k, _ in ref)
        assert h.items() == ref, (op, a, b)
        for name in {n.lower() for n in NAMES}:
            values = [v for k, v in ref if k == name]
            assert h.get_first(name) == (values[0] if values else None)
            assert h.get(name) == (",".join(values) if values else None)


def test_byte_size_counts_every_name_and_value_as_envoy_does():
    # Envoy's HeaderMap::byteSize: names and values, no separators; repeated fields each count
    h = Headers([("Host", "a.b"), ("x-b", "1"), ("x-b", "22")])
    assert h.byte_size() == len("host") + 3 + len("x-b") + 1 + len("x-b") + 2
    assert Headers().byte_size() == 0


def test_lower_name_returns_one_kept_string_per_name_and_stops_keeping_at_its_bound(monkeypatch):
    from pyproxy.http import headers as module

    monkeypatch.setattr(module, "_NAME_CACHE", {})
    first = module.lower_name(b"Content-Type")
    assert first == "content-type" and module.lower_name(b"Content-Type") is first  # the kept str, not a new one
    assert module.lower_name(b"X-\xc0") == "x-\xe0"  # latin-1, lower-cased as before
    monkeypatch.setattr(module, "_NAME_CACHE_MAX", 3)
    for i in range(10):  # a peer inventing names: decoded each time, never kept past the bound
        assert module.lower_name(f"X-Made-Up-{i}".encode()) == f"x-made-up-{i}"
    assert len(module._NAME_CACHE) == 3
