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
* Kubernetes             Service, ServiceAccount, Namespace, Pod, Deployment (registry and labels)

Other Kubernetes kinds (ConfigMap, Secret, ...) and other API groups are skipped with an Info finding.
A resource with a hard schema error (wrong type, invalid value) is left out and a finding says why;
unknown fields are dropped with a warning (`strict=False`, what the Kubernetes API server does when
serving) or reported as IST0106 errors (`strict=True`, what `istioctl validate`/`analyze` do).
Pure apart from `load_paths` reading files/stdin.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterator, Sequence

import yaml

from control.istio import messages as msg
from control.istio.messages import Finding, finding
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
    ("install.istio.io", "IstioOperator"): ("v1alpha1",),
    ("", "Service"): ("v1",),
    ("", "ServiceAccount"): ("v1",),
    ("", "Namespace"): ("v1",),
    ("", "Pod"): ("v1",),
    ("apps", "Deployment"): ("v1",),
}
# Kinds without a namespace (kubectl puts no "default" on them).
CLUSTER_SCOPED = frozenset({"Namespace"})
# Istio API groups we know of but do not load (EnvoyFilter, WorkloadGroup, ProxyConfig, WasmPlugin, ...).
ISTIO_GROUPS = frozenset({"networking.istio.io", "security.istio.io", "telemetry.istio.io", "install.istio.io",
                          "extensions.istio.io"})
YAML_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class LoadResult:
    resources: tuple[Resource, ...]
    findings: tuple[Finding, ...]

    @property
    def fatal(self) -> tuple[Finding, ...]:
        """Findings that mean the input itself could not be read (missing file, YAML syntax)."""
        return tuple(f for f in self.findings if f.code in msg.FATAL_CODES)


# --- YAML with line numbers -------------------------------------------------------------------------------

class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose documents we compose to nodes first (for lines) and construct second."""


def _record_lines(node: yaml.Node, path: str, lines: dict[str, int], findings: list[str]) -> None:
    """Walk a composed node tree and record the 1-based line of each field path (scalars have no fields)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            if key in seen:
                findings.append(f"{child}: duplicate key at line {key_node.start_mark.line + 1}; the last one wins")
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _record_lines(value_node, child, lines, findings)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = f"{path}[{i}]"
            lines[child] = item.start_mark.line + 1
            _record_lines(item, child, lines, findings)


@dataclass(frozen=True, slots=True)
class _Document:
    body: Any
    line: int
    lines: dict[str, int]
    duplicates: tuple[str, ...]


def _documents(text: str) -> Iterator[_Document]:
    """Parse every YAML document with its field lines. Raises yaml.YAMLError on bad syntax."""
    loader = _LineLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[str, int] = {}
            dups: list[str] = []
            _record_lines(node, "", lines, dups)
            body = loader.construct_document(node)
            yield _Document(body, node.start_mark.line + 1, lines, tuple(dups))
    finally:
        loader.dispose()


def _sub_lines(lines: dict[str, int], prefix: str) -> dict[str, int]:
    """Lines of a sub-document (a `List` item) with the item's prefix removed."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in lines.items() if k.startswith(head)}


# --- documents -> resources -------------------------------------------------------------------------------

def load_text(text: str, filename: str = "<stdin>", *, strict: bool = False) -> LoadResult:
    """Load every resource in one YAML/JSON text. Never raises for bad input: problems become findings."""
    resources: list[Resource] = []
    findings: list[Finding] = []
    try:
        for doc in _documents(text):
            for dup in doc.duplicates:
                findings.append(finding(msg.SCHEMA_WARNING, dup, file=filename, line=doc.line))
            _load_document(doc.body, doc.line, doc.lines, filename, strict, resources, findings)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 0
        problem = " ".join(p for p in (err.context, err.problem) if p) or str(err)
        findings.append(finding(msg.YAML_SYNTAX_ERROR, problem, file=filename, line=line))
    except yaml.YAMLError as err:  # e.g. a non-printable character, no position
        findings.append(finding(msg.YAML_SYNTAX_ERROR, str(err).splitlines()[0], file=filename))
    return LoadResult(tuple(resources), tuple(findings))


def _load_document(body: Any, line: int, lines: dict[str, int], filename: str, strict: bool,
                   resources: list[Resource], findings: list[Finding]) -> None:
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
                           resources, findings)
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
    versions = KINDS.get((group, kind))
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
    from control.istio.validate import validate_resource  # late: validate imports this module's KINDS

    checked = validate_resource(resource, strict=strict)
    findings.extend(checked.findings)
    if checked.resource is not None:
        resources.append(checked.resource)


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


def load_paths(paths: Sequence[str], *, strict: bool = False) -> LoadResult:
    """Load every resource from files, directories (recursive) and stdin ('-')."""
    files, findings = expand_paths(paths)
    resources: list[Resource] = []
    for path in files:
        try:
            if path == "-":
                text, name = sys.stdin.read(), "<stdin>"
            else:
                with open(path, encoding="utf-8") as fh:
                    text, name = fh.read(), path
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            findings.append(finding(msg.FILE_ERROR, f"{path}: cannot read: {reason}", file=path))
            continue
        result = load_text(text, name, strict=strict)
        resources += result.resources
        findings += result.findings
    return LoadResult(tuple(resources), tuple(findings))
