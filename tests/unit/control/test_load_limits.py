"""control.istio.load's limits and file checks: every hostile input is one Error finding naming the file (and
line), never an exception, and nothing from a file over a limit is loaded."""
from __future__ import annotations

import os

import pytest
import yaml

from control.istio.load import LoadLimits, check_graph, decode_source, load_paths, load_text, read_source

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
"""


def nested(levels: int) -> str:
    return VS.replace("hosts: [reviews]", "hosts: " + "[" * levels + "reviews" + "]" * levels)


def alias_bomb(levels: int, fan: int = 9) -> str:
    """The 'billion laughs': each level is `fan` aliases of the one before; fan**levels scalars expanded."""
    rows = ['  l0: &l0 [' + ", ".join(['"lol"'] * fan) + "]"]
    rows += [f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan) + "]" for i in range(1, levels + 1)]
    return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n" + "\n".join(rows) + "\n"


def only(result, code: str):
    (f,) = [f for f in result.findings if f.code == code]
    return f


@pytest.mark.parametrize("text, limits, needle, line", [
    (nested(500), LoadLimits(), "nesting deeper than 100 levels", 5),
    (nested(9), LoadLimits(max_depth=8), "nesting deeper than 8 levels", 5),
    (alias_bomb(8), LoadLimits(), "YAML aliases expand to 490,329,036 more nodes (limit 100,000", 1),
    (alias_bomb(3), LoadLimits(max_alias_nodes=8000), "YAML aliases expand to 8,289 more nodes (limit 8,000", 1),
    ("a: &a [x, *a]\n", LoadLimits(), "an alias refers to a node that contains it", 1),
    ("a: &a {b: *a}\n", LoadLimits(), "an alias refers to a node that contains it", 1),
    # 5 anchors of 4 levels each, chained by aliases: 21 levels deep only once expanded
    ("a0: &a0 [[[[x]]]]\n" + "".join(f"a{i}: &a{i} [[[[*a{i - 1}]]]]\n" for i in range(1, 5)),
     LoadLimits(max_depth=12), "nesting deeper than 12 levels once aliases are expanded", 1),
    ("a: 1\n---\n" * 11, LoadLimits(max_documents=10), "more than 10 documents in one file", 19),
])
def test_a_file_over_a_limit_is_one_fatal_error_and_loads_nothing(text, limits, needle, line):
    result = load_text(VS + "---\n" + text, "hostile.yaml", limits=limits)
    f = only(result, "PYM0008")
    assert needle in f.message and "the file is not loaded" in f.message
    assert (f.file, f.line - VS.count("\n") - 1) == ("hostile.yaml", line)
    assert result.resources == () and result.fatal == (f,)


@pytest.mark.parametrize("text", [
    nested(100 - 3),  # the deepest allowed: hosts' list is level 3 of the document
    "a: &a {x: 1}\nb: *a\nc: [*a, *a]\n",  # anchors used a few times are fine
    "---\n" * 100,
])
def test_within_the_limits_loads(text):
    assert load_text(text, "ok.yaml").fatal == ()


def test_aliases_within_the_budget_are_expanded_and_their_fields_have_lines():
    text = VS.replace("  http:\n  - route: [{destination: {host: reviews}}]\n",
                      "  http:\n  - route: &r [{destination: {host: reviews}}]\n  - route: *r\n")
    (vs,) = load_text(text, "anchors.yaml").resources
    assert vs.spec["http"][0]["route"] == vs.spec["http"][1]["route"]
    assert vs.lines["spec.http[1].route[0].destination.host"] == 7  # the anchor's line


def test_check_graph_measures_the_written_graph_not_the_expanded_tree():
    # 30 levels of 2 aliases: 2**30 nodes expanded; measured in milliseconds from ~60 written nodes
    text = "l0: &l0 [x, y]\n" + "".join(f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]\n" for i in range(1, 31))
    with pytest.raises(yaml.MarkedYAMLError, match=r"expand to [\d,]+ more nodes"):
        check_graph(yaml.compose(text, Loader=yaml.SafeLoader), LoadLimits())


@pytest.mark.parametrize("data, text, why", [
    (b"", "", "empty"),
    (b"a: 1\n", "a: 1\n", ""),
    ("a: café\n".encode(), "a: café\n", ""),
    (b"\x7fELF\x02\x01\x01\x00\x00", None, "a binary file (NUL byte at offset 7), not YAML or JSON"),
    ("a: 1\n".encode("utf-16"), None, "UTF-16 text; save it as UTF-8"),
    ("a: 1\n".encode("utf-32"), None, "UTF-32 text; save it as UTF-8"),
    ("a: café\n".encode("latin-1"), None, "not UTF-8 text (byte 0xe9 at offset 6)"),
    (b"x" * 101, None, "larger than the limit of 100 bytes"),
])
def test_decode_source(data, text, why):
    assert decode_source(data, LoadLimits(max_file_bytes=100)) == (text, why)


def test_files_that_are_not_yaml_text_are_one_finding_each(tmp_path):
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    (tmp_path / "latin1.yaml").write_bytes("a: café\n".encode("latin-1"))
    (tmp_path / "garbage.yaml").write_bytes(b"\x1b[31m}{::: ]]\x07\n")
    (tmp_path / "empty.yaml").write_bytes(b"")
    (tmp_path / "big.yaml").write_text(VS + "#" * 2000)
    (tmp_path / "dir.yaml").mkdir()  # a directory named like a file: walked into, never read as a file
    (tmp_path / "dir.yaml" / "vs.yaml").write_text(VS)
    os.mkfifo(tmp_path / "fifo.yaml")  # opening it for reading would block forever
    result = load_paths([str(tmp_path)], limits=LoadLimits(max_file_bytes=1000))
    by_file = {os.path.basename(f.file): (f.code, f.level.label, f.message) for f in result.findings}
    assert by_file == {
        "big.yaml": ("PYM0008", "Error", f"{tmp_path}/big.yaml: {len(VS) + 2000:,} bytes, larger than the limit "
                                         "of 1,000 bytes; not read"),
        "binary.yaml": ("PYM0001", "Error", f"{tmp_path}/binary.yaml: a binary file (NUL byte at offset 0), "
                                            "not YAML or JSON; not loaded"),
        "empty.yaml": ("PYM0001", "Warning", f"{tmp_path}/empty.yaml: file is empty; no resources"),
        "fifo.yaml": ("PYM0001", "Error", f"{tmp_path}/fifo.yaml: not a regular file (a FIFO, socket or device); "
                                          "not read"),
        "garbage.yaml": ("PYM0002", "Error", "YAML syntax error: unacceptable character #x001b: control "
                                             "characters are not allowed"),
        "latin1.yaml": ("PYM0001", "Error", f"{tmp_path}/latin1.yaml: not UTF-8 text (byte 0xe9 at offset 6); "
                                            "not loaded"),
    }
    assert [r.name for r in result.resources] == ["reviews"]  # dir.yaml/vs.yaml


@pytest.mark.parametrize("path, needle", [
    ("/dev/zero", "not a regular file"),  # would be read forever
    (".", "is a directory, not a file"),
])
def test_read_source_never_reads_what_is_not_a_regular_file(path, needle):
    text, (f,) = read_source(path, LoadLimits())
    assert text is None and needle in f.message and f.code == "PYM0001"


def test_an_unreadable_file_is_a_finding(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text(VS)
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("running as root: every file is readable")
    (f,) = load_paths([str(path)]).fatal
    assert f.message == f"{path}: cannot read: Permission denied"


def test_an_unexpected_exception_in_one_file_is_a_finding_for_that_file_and_the_others_load(tmp_path):
    # The last line of defence: a limit set past what Python's recursion allows lets RecursionError happen.
    (tmp_path / "a.yaml").write_text(nested(900))  # under libyaml's own 1000, over Python's recursion limit
    (tmp_path / "b.yaml").write_text(VS.replace("reviews", "ratings"))
    result = load_paths([str(tmp_path)], limits=LoadLimits(max_depth=10**6))
    (f,) = [f for f in result.findings if f.level.label == "Error"]
    assert (f.code, f.file) == ("IST0001", f"{tmp_path}/a.yaml") and "RecursionError" in f.message
    assert [r.name for r in result.resources] == ["ratings"]
