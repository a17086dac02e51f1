"""Load Istio and Kubernetes YAML (files, directories, stdin) into `Resource`s that remember file and line.

This is istiod's config input when it reads files (and `istioctl analyze`'s, `istioctl validate -f`'s):
multi-document YAML or JSON, `---` separators, empty documents and `List` kinds with `items` are all fine.
Each document is composed with PyYAML's SafeLoader into nodes first, so every field's line is known
(`Resource.lines["spec.http[0].route[0].destination.host"] == 17`), then validated against Istio's schema
(`control.istio.validate`). What is loaded:

* `networking.istio.io`  Gateway, VirtualService, DestinationRule, ServiceEntry, Sidecar, WorkloadEntry
* `security.istio.io`    PeerAuthentication, AuthorizationPolicy, RequestAuthentication
* `telemetry.istio.io`   Telemetry
* `install.istio.io`     IstioOperator (mesh-wide settings: `spec.meshConfig`)
* Kubernetes             Service, ServiceAccount, Namespace, Pod, Deployment (registry and labels), Secret
                         (TLS material that Gateway and DestinationRule `credentialName` name; its `data` is
                         never printed: `Resource.__repr__` leaves a Secret's body out), Node (its topology
                         labels are the locality of the pods on it, for analysis)

EnvoyFilter is served: a subset of its patches is applied (control/translate/envoy_filter.py; the rest is named by
`meshctl analyze`, PYM0011). ProxyConfig, WorkloadGroup and WasmPlugin are validated against Istio's schema (IST0106 when
invalid, as the API server would refuse them) and then skipped with an Info finding: they are not served
(analysis, `keep_invalid=True`, still gets them). A Kubernetes Gateway API `Gateway`
(gateway.networking.k8s.io) is read for analysis only, unvalidated: a VirtualService may name it in `gateways`
(IST0101, IST0132 against its listeners' hostnames); it is skipped with an Info finding otherwise.
Other Kubernetes kinds (ConfigMap, ...) and other API groups are skipped with an Info finding.
A resource with a hard schema error (wrong type, invalid value) is left out and a finding says why (for
analysis, `keep_invalid=True` keeps what is well-typed of it, as istioctl analyze still analyzes it);
unknown fields are dropped with a warning (`strict=False`, what the Kubernetes API server does when
serving) or reported as IST0106 errors (`strict=True`, what `istioctl validate`/`analyze` do).
Pure apart from `load_paths` reading files/stdin.
"""
from __future__ import annotations

import logging
import os
import re
import stat
import sys
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterator, Sequence

import yaml

from control.istio import messages as msg
from control.istio.messages import Finding, Level, finding
from control.istio.resources import Resource, Source, freeze

# (group, kind) -> API versions Istio/Kubernetes serve for it. Group "" is Kubernetes core.
KINDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("networking.istio.io", "Gateway"): ("v1alpha3", "v1beta1", "v1"),
    ("networking.istio.io", "VirtualService"): ("v1alpha3", "v1beta1", "v1"),
    ("networking.istio.io", "DestinationRule"): ("v1alpha3", "v1beta1", "v1"),
    ("networking.istio.io", "ServiceEntry"): ("v1alpha3", "v1beta1", "v1"),
    ("networking.istio.io", "Sidecar"): ("v1alpha3", "v1beta1", "v1"),
    ("networking.istio.io", "WorkloadEntry"): ("v1alpha3", "v1beta1", "v1"),
    ("security.istio.io", "PeerAuthentication"): ("v1beta1", "v1"),
    ("security.istio.io", "AuthorizationPolicy"): ("v1beta1", "v1"),
    ("security.istio.io", "RequestAuthentication"): ("v1beta1", "v1"),
    ("telemetry.istio.io", "Telemetry"): ("v1alpha1", "v1"),
    ("networking.istio.io", "EnvoyFilter"): ("v1alpha3",),  # a subset applied: control/translate/envoy_filter.py
    ("install.istio.io", "IstioOperator"): ("v1alpha1",),
    ("", "Service"): ("v1",),
    ("", "ServiceAccount"): ("v1",),
    ("", "Namespace"): ("v1",),
    ("", "Pod"): ("v1",),
    ("apps", "Deployment"): ("v1",),
    ("", "Secret"): ("v1",),
    ("", "Node"): ("v1",),
}
# Istio kinds validated (IST0106 when invalid) but not served: reported as ignored after validation.
VALIDATED_ONLY: dict[tuple[str, str], tuple[str, ...]] = {
    ("networking.istio.io", "ProxyConfig"): ("v1beta1",),
    ("networking.istio.io", "WorkloadGroup"): ("v1alpha3", "v1beta1", "v1"),
    ("extensions.istio.io", "WasmPlugin"): ("v1alpha1",),
}
# Kinds read only for what analysis needs of them (`keep_invalid`), neither validated nor served: a Kubernetes
# Gateway API Gateway, which a VirtualService may name in `gateways` (its listeners' hostnames: IST0132).
ANALYZED_ONLY: dict[tuple[str, str], tuple[str, ...]] = {
    ("gateway.networking.k8s.io", "Gateway"): ("v1", "v1beta1"),
}
# Kinds without a namespace (kubectl puts no "default" on them).
CLUSTER_SCOPED = frozenset({"Namespace", "Node"})
# Istio API groups we know of but do not load (WorkloadGroup, ProxyConfig, WasmPlugin, ...).
ISTIO_GROUPS = frozenset({"networking.istio.io", "security.istio.io", "telemetry.istio.io", "install.istio.io",
                          "extensions.istio.io"})
YAML_SUFFIXES = (".yaml", ".yml", ".json")

log = logging.getLogger("pyproxy.control.load")


@dataclass(frozen=True, slots=True)
class LoadResult:
    resources: tuple[Resource, ...]
    findings: tuple[Finding, ...]

    @property
    def fatal(self) -> tuple[Finding, ...]:
        """Findings that mean the input itself could not be read (missing file, YAML syntax)."""
        return tuple(f for f in self.findings if f.code in msg.FATAL_CODES and f.level >= Level.ERROR)


# --- limits -----------------------------------------------------------------------------------------------

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LoadLimits:
    """What one file may cost to load. A file over a limit is rejected whole with a PYM0008 Error finding
    naming the file (and line), like a YAML syntax error: nothing in it is constructed.

    * `max_file_bytes` 16 MiB: the biggest real config we know of is the 10 MB stress file of 26,795
      VirtualServices (the issue's item 8), and etcd refuses objects over 1.5 MiB, so 16 MiB is ten
      full-size objects or that stress file with room to spare; it loads in a few seconds off the loop.
    * `max_documents` 50,000 `---`-separated documents per file: about twice that stress file.
    * `max_depth` 100 nesting levels (mappings/sequences/scalars, counted after alias expansion): the deepest
      Istio field is about 10 levels down (VirtualService spec.http[].route[].headers.request.set.<name>),
      and 100 levels keep composing, freezing and validating far below Python's recursion limit of 1000.
    * `max_alias_nodes` 100,000 nodes that YAML aliases (`*anchor`) may add to a document when expanded.
      Kubernetes YAML rarely uses anchors at all; a "billion laughs" bomb adds 10^8 and more from a few
      hundred bytes (CVE-2019-11253 was this against kube-apiserver; go-yaml now refuses excessive
      aliasing the same way, by counting before it decodes).
    """

    max_file_bytes: int = 16 * MiB
    max_documents: int = 50_000
    max_depth: int = 100
    max_alias_nodes: int = 100_000


class LimitExceeded(yaml.MarkedYAMLError):
    """A loader limit was reached; `problem_mark` is where (when known)."""


# --- YAML with line numbers -------------------------------------------------------------------------------

try:  # libyaml's scanner and parser (C) make events 8x faster; composing stays in Python, where we count
    from yaml.cyaml import CParser as _EventSource
except ImportError:  # PyYAML built without libyaml: the same events from PyYAML's own reader, scanner, parser
    class _EventSource(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


class _LineLoader(yaml.composer.Composer, _EventSource, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """SafeLoader's parts, composing to nodes first (for lines and limits) and constructing second.
    `compose_node` is PyYAML's recursive descent; it is stopped at `max_depth` before Python's recursion
    limit is near (500 nested `[` used to end in RecursionError)."""

    def __init__(self, text: str, limits: LoadLimits) -> None:
        _EventSource.__init__(self, text)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.limits = limits
        self.depth = 0
        self.aliases = 0  # alias uses in the document being composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self.depth += 1
        try:
            event = self.peek_event()
            if self.depth > self.limits.max_depth:
                raise LimitExceeded(problem=f"nesting deeper than {self.limits.max_depth} levels",
                                    problem_mark=event.start_mark)
            if isinstance(event, yaml.AliasEvent):
                self.aliases += 1
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_graph(root: yaml.Node, limits: LoadLimits) -> None:
    """Raise LimitExceeded when expanding the document's aliases would add more than `max_alias_nodes`
    nodes or nest deeper than `max_depth`, or when an alias refers to its own ancestor (a cycle).

    The composer shares an anchored node wherever its alias is used, so the document is a graph of its
    written nodes. Expanded size and height are computed per distinct node, children first (an explicit
    stack, no recursion): the cost is the written size, never the expanded one."""
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_path: set[int] = set()  # the nodes whose children are being measured: an ancestor seen again = a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, measured = stack.pop()
        key = id(node)
        if measured:
            on_path.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            height[key] = 1 + max((height[id(k)] for k in kids), default=0)
            continue
        if key in size:
            continue
        if key in on_path:
            raise LimitExceeded(problem="an alias refers to a node that contains it (a recursive structure)",
                                problem_mark=node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)
    added = size[id(root)] - len(size)
    if added > limits.max_alias_nodes:
        count = f"{added:,}" if added < 10**15 else "more than 10^15"
        raise LimitExceeded(problem=f"YAML aliases expand to {count} more nodes (limit {limits.max_alias_nodes:,}: "
                                    "an alias bomb?)", problem_mark=root.start_mark)
    if height[id(root)] > limits.max_depth:
        raise LimitExceeded(problem=f"nesting deeper than {limits.max_depth} levels once aliases are expanded",
                            problem_mark=root.start_mark)


def _record_lines(root: yaml.Node, lines: dict[str, int], findings: list[str]) -> None:
    """Record the 1-based line of each field path of a checked document (explicit stack, pre-order)."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        children: list[tuple[yaml.Node, str]] = []
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = f"{path}.{key}" if path else key
                if key in seen:
                    findings.append(f"{child}: duplicate key at line {key_node.start_mark.line + 1}; "
                                    "the last one wins")
                seen.add(key)
                lines[child] = key_node.start_mark.line + 1
                children.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = f"{path}[{i}]"
                lines[child] = item.start_mark.line + 1
                children.append((item, child))
        stack.extend(reversed(children))


@dataclass(frozen=True, slots=True)
class _Document:
    body: Any
    line: int
    lines: dict[str, int]
    duplicates: tuple[str, ...]


def _documents(text: str, limits: LoadLimits) -> Iterator[_Document]:
    """Parse every YAML document with its field lines. Raises yaml.YAMLError on bad syntax or a limit."""
    loader = _LineLoader(text, limits)
    count = 0
    try:
        while loader.check_node():
            loader.aliases = 0
            node = loader.get_node()
            if node is None:
                continue
            count += 1
            if count > limits.max_documents:
                raise LimitExceeded(problem=f"more than {limits.max_documents:,} documents in one file",
                                    problem_mark=node.start_mark)
            if loader.aliases:  # else the composer's depth check was the whole story
                check_graph(node, limits)
            lines: dict[str, int] = {}
            dups: list[str] = []
            _record_lines(node, lines, dups)
            body = loader.construct_document(node)
            yield _Document(body, node.start_mark.line + 1, lines, tuple(dups))
    finally:
        loader.dispose()


def _sub_lines(lines: dict[str, int], prefix: str) -> dict[str, int]:
    """Lines of a sub-document (a `List` item) with the item's prefix removed."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in lines.items() if k.startswith(head)}


# An IPv6-like plain scalar ending in ':' inside a flow sequence (`addresses: [1.2.3.4, 001:db8::]`):
# YAML 1.2 and libyaml end the scalar at a ':' before ',' or ']' and then fail; Go's yaml.v3, which Istio and
# kubectl use, reads the whole token as a string. Only such a token, between '[' or ',' and ',' or ']'.
_FLOW_IPV6 = re.compile(r"(?<=[\[,])(\s*)([0-9A-Fa-f]*:[0-9A-Fa-f:.]*:)(?=\s*[,\]])")


def quote_flow_ipv6(text: str) -> str:
    """The text with IPv6-like flow-sequence scalars that end in ':' double-quoted (same lines)."""
    return _FLOW_IPV6.sub(lambda m: f'{m.group(1)}"{m.group(2)}"', text)


# --- documents -> resources -------------------------------------------------------------------------------

def load_text(text: str, filename: str = "<stdin>", *, strict: bool = False,
              limits: LoadLimits = LoadLimits(), keep_invalid: bool = False) -> LoadResult:
    """Load every resource in one YAML/JSON text. Never raises for bad input: problems become findings.
    A limit reached rejects the whole text (no resources). `keep_invalid` (analysis only, as
    `istioctl analyze`): a resource with a hard schema error is reported and still returned, its invalid
    values left out, so references from and to it are analyzed; serving never asks for this."""
    resources: list[Resource] = []
    findings: list[Finding] = []
    try:
        for doc in _documents(text, limits):
            for dup in doc.duplicates:
                findings.append(finding(msg.SCHEMA_WARNING, dup, file=filename, line=doc.line))
            _load_document(doc.body, doc.line, doc.lines, filename, strict, resources, findings, keep_invalid)
    except LimitExceeded as err:
        line = err.problem_mark.line + 1 if err.problem_mark else 0
        return LoadResult((), (finding(msg.LIMIT_EXCEEDED, f"{err.problem}; the file is not loaded",
                                       file=filename, line=line),))
    except yaml.MarkedYAMLError as err:
        quoted = quote_flow_ipv6(text) if "unexpected ':'" in str(err.problem) else text
        if quoted != text:  # Go's YAML reads `[1.2.3.4, 001:db8::]` as strings: read it as istiod does
            return load_text(quoted, filename, strict=strict, limits=limits, keep_invalid=keep_invalid)
        mark = err.problem_mark or err.context_mark
        line = min(mark.line + 1, text.count("\n") + 1) if mark else 0  # libyaml marks EOF one line on
        problem = " ".join(p for p in (err.context, err.problem) if p) or str(err)
        findings.append(finding(msg.YAML_SYNTAX_ERROR, problem, file=filename, line=line))
    except yaml.reader.ReaderError as err:  # a non-printable character: a position, no mark
        line = text.count("\n", 0, err.position) + 1
        findings.append(finding(msg.YAML_SYNTAX_ERROR, str(err).splitlines()[0],
                                file=filename, line=line))
    except yaml.YAMLError as err:  # no position
        findings.append(finding(msg.YAML_SYNTAX_ERROR, str(err).splitlines()[0], file=filename))
    return LoadResult(tuple(resources), tuple(findings))


def _load_document(body: Any, line: int, lines: dict[str, int], filename: str, strict: bool,
                   resources: list[Resource], findings: list[Finding], keep_invalid: bool = False) -> None:
    if body is None:  # empty document, `---` tail
        return
    where = dict(file=filename, line=line)
    if not isinstance(body, dict):
        findings.append(finding(msg.SCHEMA_VALIDATION_ERROR,
                                f"a document must be a mapping with apiVersion and kind, not {_type_name(body)}",
                                **where))
        return
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if kind == "List" and isinstance(body.get("items"), list):
        for i, item in enumerate(body["items"]):
            prefix = f"items[{i}]"
            _load_document(item, lines.get(prefix, line), _sub_lines(lines, prefix), filename, strict,
                           resources, findings, keep_invalid)
        return
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
        missing = [n for n, v in (("apiVersion", api_version), ("kind", kind)) if not isinstance(v, str) or not v]
        findings.append(finding(msg.SCHEMA_VALIDATION_ERROR,
                                f"document has no {' and '.join(missing)}; it is not a Kubernetes resource",
                                **where))
        return
    group, _, version = api_version.rpartition("/")
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    name = metadata.get("name") if isinstance(metadata.get("name"), str) else ""
    namespace = "" if kind in CLUSTER_SCOPED else str(metadata.get("namespace") or "default")
    label = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
    versions = KINDS.get((group, kind)) or VALIDATED_ONLY.get((group, kind)) or ANALYZED_ONLY.get((group, kind))
    if versions is None:
        if group in ISTIO_GROUPS:
            text = f"{api_version} {kind} is not supported by pyproxy mesh yet; it is ignored"
        else:
            text = f"{api_version} {kind} is not used by the mesh; it is ignored"
        findings.append(finding(msg.IGNORED_KIND, text, resource=label, **where))
        return
    if version not in versions:
        findings.append(finding(
            msg.SCHEMA_VALIDATION_ERROR,
            f"{kind} is served as {', '.join(f'{group}/{v}' if group else v for v in versions)}, "
            f"not {api_version!r}",
            resource=label, path="apiVersion", file=filename, line=lines.get("apiVersion", line)))
        return
    if not name:
        findings.append(finding(msg.SCHEMA_VALIDATION_ERROR, "metadata.name is required", resource=label,
                                path="metadata.name", file=filename, line=lines.get("metadata", line)))
        return
    if "spec" in body:
        spec = body["spec"] if body["spec"] is not None else {}
    else:  # kinds without a spec (ServiceAccount): the body minus the envelope
        spec = {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    resource = Resource(
        api_version=api_version, kind=kind, name=name, namespace=namespace,
        spec=freeze(spec) if isinstance(spec, dict) else spec,
        labels=_string_map(metadata.get("labels")), annotations=_string_map(metadata.get("annotations")),
        source=Source(filename, line), lines=MappingProxyType(dict(lines)),
    )
    if (group, kind) in ANALYZED_ONLY:
        findings.append(finding(msg.IGNORED_KIND, f"{api_version} {kind} is read by analysis only (not served); "
                                                  "it is ignored", resource=label, **where))
        if keep_invalid:
            resources.append(resource)
        return
    from control.istio.validate import validate_resource  # late: validate imports this module's KINDS

    checked = validate_resource(resource, strict=strict)
    findings.extend(checked.findings)
    if (group, kind) in VALIDATED_ONLY:
        findings.append(finding(msg.IGNORED_KIND, f"{api_version} {kind} is validated but not supported by "
                                                  "pyproxy mesh yet; it is ignored", resource=label, **where))
        if keep_invalid:  # analysis (EnvoyFilter's IST0151-IST0155) still sees it, valid or not
            resources.append(checked.resource or checked.rejected)
        return
    if checked.resource is not None:
        resources.append(checked.resource)
    elif keep_invalid and checked.rejected is not None:
        resources.append(checked.rejected)


def _string_map(value: Any) -> MappingProxyType:
    if not isinstance(value, dict):
        return MappingProxyType({})
    return MappingProxyType({str(k): "" if v is None else str(v) for k, v in value.items()})


def _type_name(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), type(value).__name__)


# --- files ------------------------------------------------------------------------------------------------

def expand_paths(paths: Sequence[str]) -> tuple[list[str], list[Finding]]:
    """Files named and the *.yaml/*.yml/*.json under directories named (recursive, sorted); '-' is stdin."""
    files: list[str] = []
    problems: list[Finding] = []
    for path in paths:
        if path == "-":
            files.append(path)
        elif os.path.isdir(path):
            found = []
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [os.path.join(root, n) for n in names if n.endswith(YAML_SUFFIXES)]
            files += sorted(found)
        elif os.path.exists(path):
            files.append(path)
        else:
            problems.append(finding(msg.FILE_ERROR, f"{path}: no such file or directory", file=path))
    return files, problems


_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
         (b"\xfe\xff", "UTF-16"))


def decode_source(data: bytes, limits: LoadLimits) -> tuple[str | None, str]:
    """(text, "") for a YAML/JSON file's bytes, or (None, why not) in a short phrase. Empty is ("", "empty")."""
    if len(data) > limits.max_file_bytes:
        return None, f"larger than the limit of {limits.max_file_bytes:,} bytes"
    if not data:
        return "", "empty"
    nul = data.find(b"\0")
    if nul >= 0:
        for bom, encoding in _BOMS:
            if data.startswith(bom):
                return None, f"{encoding} text; save it as UTF-8"
        return None, f"a binary file (NUL byte at offset {nul}), not YAML or JSON"
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})"


def read_source(path: str, limits: LoadLimits) -> tuple[str | None, list[Finding]]:
    """The text of one file ('-' = stdin), or None and a finding saying why it cannot be used: missing,
    unreadable, not a regular file (a directory, FIFO or device is never opened for reading), too big,
    binary, not UTF-8. An empty file is text "" with a warning (its resources, if it had any, are gone)."""
    name = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            stream = getattr(sys.stdin, "buffer", None)
            data = stream.read(limits.max_file_bytes + 1) if stream is not None else \
                sys.stdin.read(limits.max_file_bytes + 1).encode("utf-8", "surrogateescape")
        else:
            st = os.stat(path)
            if stat.S_ISDIR(st.st_mode):
                return None, [finding(msg.FILE_ERROR, f"{path}: is a directory, not a file", file=path)]
            if not stat.S_ISREG(st.st_mode):
                return None, [finding(msg.FILE_ERROR, f"{path}: not a regular file (a FIFO, socket or device); "
                                                      "not read", file=path)]
            if st.st_size > limits.max_file_bytes:
                return None, [finding(msg.LIMIT_EXCEEDED, f"{path}: {st.st_size:,} bytes, larger than the limit "
                                                          f"of {limits.max_file_bytes:,} bytes; not read", file=path)]
            with open(path, "rb") as fh:  # read at most one byte over the limit, should it grow meanwhile
                data = fh.read(limits.max_file_bytes + 1)
    except OSError as err:
        return None, [finding(msg.FILE_ERROR, f"{name}: cannot read: {err.strerror or err}", file=name)]
    text, why = decode_source(data, limits)
    if text is None:
        code = msg.LIMIT_EXCEEDED if len(data) > limits.max_file_bytes else msg.FILE_ERROR
        return None, [finding(code, f"{name}: {why}; not loaded", file=name)]
    if why:
        return text, [finding(msg.FILE_ERROR, f"{name}: file is empty; no resources", file=name,
                              level=Level.WARNING)]
    return text, []


def load_paths(paths: Sequence[str], *, strict: bool = False, limits: LoadLimits = LoadLimits(),
               keep_invalid: bool = False) -> LoadResult:
    """Load every resource from files, directories (recursive) and stdin ('-'). Never raises for bad input.

    An unexpected exception while loading one file (a bug of ours: the limits above are what keeps hostile
    input out) becomes an IST0001 Internal error finding for that file, logged, and the other files load."""
    files, findings = expand_paths(paths)
    resources: list[Resource] = []
    for path in files:
        text, problems = read_source(path, limits)
        findings += problems
        if text is None:
            continue
        name = "<stdin>" if path == "-" else path
        try:
            result = load_text(text, name, strict=strict, limits=limits, keep_invalid=keep_invalid)
        except Exception as err:  # noqa: BLE001 - last line of defence, see the docstring
            log.error("loading %s failed: %s: %s", name, type(err).__name__, err)
            log.debug("loading %s failed", name, exc_info=True)
            findings.append(finding(msg.INTERNAL_ERROR, f"{type(err).__name__} while loading the file: {err}",
                                    file=name))
            continue
        resources += result.resources
        findings += result.findings
    return LoadResult(tuple(resources), tuple(findings))
