"""Every error and warning `meshctl validate` can give, as the user reads it: one row per message site in
control/istio/validate.py.

Each row is one small resource. It is written to a file and run through `meshctl validate -f FILE` (the
command's own entry point, `control.cli.meshctl.main`, in process), and the lines it prints are compared
whole: level, code, the resource (`Kind namespace/name`), `file:line` of the field, and the message with its
field path. A YAML comment `#@a` marks the line a finding must point at; `{a}` in an expected line stands for
`FILE:LINE` of that mark. A row expects exactly its lines: an extra finding, a missing one, a wrong path, a
wrong line or a traceback (IST0001 Internal error) fails it.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from control.cli.meshctl import main as meshctl
from control.istio.load import load_paths
from control.istio.validate import RULES, parse_duration, rule

API = {"VirtualService": "networking.istio.io/v1", "DestinationRule": "networking.istio.io/v1",
       "Gateway": "networking.istio.io/v1", "ServiceEntry": "networking.istio.io/v1",
       "Sidecar": "networking.istio.io/v1", "WorkloadEntry": "networking.istio.io/v1",
       "EnvoyFilter": "networking.istio.io/v1alpha3", "ProxyConfig": "networking.istio.io/v1beta1",
       "WorkloadGroup": "networking.istio.io/v1", "WasmPlugin": "extensions.istio.io/v1alpha1",
       "PeerAuthentication": "security.istio.io/v1", "AuthorizationPolicy": "security.istio.io/v1",
       "RequestAuthentication": "security.istio.io/v1", "Telemetry": "telemetry.istio.io/v1",
       "IstioOperator": "install.istio.io/v1alpha1", "Node": "v1"}


@dataclass(frozen=True)
class Row:
    id: str
    kind: str
    spec: str  # the spec's YAML (dedented); "#@x" marks the line a finding points at
    expect: tuple[tuple[str, str, str, str], ...]  # (level, code, mark, message)
    name: str = "x"
    namespace: str = "ns1"


def E(mark: str, text: str):
    """A schema validation error (IST0106) at the marked line; `text` is "field.path: message"."""
    return ("Error", "IST0106", mark, f"Schema validation error: {text}")


def W(mark: str, text: str):
    """A schema validation warning (IST0133): Istio's webhook accepts the resource and warns."""
    return ("Warning", "IST0133", mark, f"Schema validation warning: {text}")


def U(mark: str, text: str):
    """A field Istio accepts that this project does not implement yet (PYM0004): accepted, with a warning."""
    return ("Warning", "PYM0004", mark, f"{text} is accepted by Istio but not supported by pyproxy mesh yet; "
                                        "it is ignored")


def row(id: str, kind: str, spec: str, *expect, **meta) -> Row:
    return Row(id, kind, spec, expect, **meta)


def document(r: Row) -> str:
    spec = "\n".join("  " + line if line.strip() else "" for line in _dedent(r.spec).splitlines())
    ns = f"  namespace: {r.namespace}\n" if r.namespace else ""
    return f"apiVersion: {API[r.kind]}\nkind: {r.kind}\nmetadata:\n  name: {r.name}\n{ns}spec:\n{spec}\n"


def _dedent(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    return "\n".join(line[indent:] for line in text.strip("\n").splitlines())


def marks(text: str) -> dict[str, int]:
    """Mark -> line number; `spec` is the `spec:` line (where a finding about the whole spec points)."""
    lines = text.splitlines()
    found = {m.group(1): n for n, line in enumerate(lines, 1) for m in re.finditer(r"#@(\w+)", line)}
    return {"spec": lines.index("spec:") + 1, **found}


ROWS = [
    # --- scalars: durations, integers, numbers, objects --------------------------------------------------
    row("duration-sign-only", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          timeout: "-"  #@a
        """, E("a", "spec.http[0].timeout: invalid duration '-'")),
    row("duration-non-ascii-digit", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          timeout: "\u0663s"  #@a
        """, E("a", "spec.http[0].timeout: invalid duration '\u0663s' (units are ns, us, ms, s, m, h; "
                    "e.g. \"1.5s\", \"100ms\")")),
    row("duration-is-a-date", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          timeout: 2020-01-01  #@a
        """, E("a", "spec.http[0].timeout: must be a duration string such as \"5s\" or \"100ms\", not date")),
    row("string-is-an-object", "VirtualService", """
        hosts:
        - {a: 1}  #@a
        http:
        - route: [{destination: {host: r}}]
        """, E("a", "spec.hosts[0]: must be a string, not an object")),
    row("map-value-null", "Sidecar", """
        workloadSelector:
          labels:
            app:  #@a
        outboundTrafficPolicy: {mode: REGISTRY_ONLY}
        """, E("a", "spec.workloadSelector.labels.app: must be a string, not null")),
    row("int32-out-of-range", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          retries:
            attempts: 3000000000  #@a
        """, E("a", "spec.http[0].retries.attempts: 3000000000 is out of range for int32 "
                    "(-2147483648..2147483647)")),
    row("percent-not-a-number", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          mirror: {host: m}
          mirrorPercentage:
            value: half  #@a
        """, E("a", "spec.http[0].mirrorPercentage.value: must be a number, not string 'half'")),
    row("struct-not-an-object", "IstioOperator", """
        values: 3  #@a
        """, E("a", "spec.values: must be an object, not number 3")),
    row("list-entry-null", "VirtualService", """
        hosts:
        - r
        -  #@a
        http:
        - route: [{destination: {host: r}}]
        """, E("a", "spec.hosts[1]: list entries cannot be null")),
    row("map-not-an-object", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          headers:
            request:
              set: 3  #@a
        """, E("a", "spec.http[0].headers.request.set: must be an object (a map), not number 3")),
    row("message-not-an-object", "VirtualService", """
        hosts: [r]
        http:
        - 3  #@a
        """, E("a", "spec.http[0]: must be an object (HTTPRoute), not number 3")),
    row("unknown-field-no-suggestion", "VirtualService", """
        hosts: [r]
        zzzz: 1  #@a
        http:
        - route: [{destination: {host: r}}]
        """, E("a", 'spec.zzzz: unknown field "zzzz" in VirtualService')),
    row("null-is-not-set", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          timeout: null
        """),
    row("int64-as-string-is-read-as-a-number", "DestinationRule", """
        host: r
        trafficPolicy:
          loadBalancer:
            consistentHash:
              httpHeaderName: x-user
              maglev:
                tableSize: "65536"  #@a
        """, E("a", "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: tableSize must be a prime "
                    "number for maglev")),

    # --- hosts (ValidateWildcardDomain) -----------------------------------------------------------------
    row("host-too-long", "DestinationRule", f"""
        host: {".".join(["a" * 60] * 5)}  #@a
        """, E("a", f"spec.host: domain name '{'.'.join(['a' * 60] * 5)}' too long (max 255)")),
    row("host-fqdn-trailing-dot-and-ip", "DestinationRule", """
        host: reviews.default.svc.cluster.local.
        subsets:
        - name: v1
          trafficPolicy:
            tls: {mode: SIMPLE, sni: 10.0.0.1}
        """),
    row("host-bad-label", "DestinationRule", """
        host: a_b.com  #@a
        """, E("a", "spec.host: invalid host 'a_b.com': 'a_b' is not a valid DNS label")),

    # --- VirtualService ---------------------------------------------------------------------------------
    row("vs-gateway-without-hosts", "VirtualService", """
        gateways: [gw]
        http:
        - route: [{destination: {host: r}}]
        """, E("spec", "spec.hosts: virtual service must have at least one host (a delegate VirtualService has "
                    "no gateways)")),
    row("vs-wildcard-host-on-mesh", "VirtualService", """
        hosts:
        - "*"  #@a
        http:
        - route: [{destination: {host: r}}]
        """, E("a", "spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh "
                    "gateway")),
    row("vs-overlapping-wildcard-hosts", "VirtualService", """
        hosts:
        - "*.foo.com"  #@a
        - "*.com"
        http:
        - route: [{destination: {host: r}}]
        """, E("a", "spec.hosts[0]: duplicate hosts in virtual service: *.foo.com & *.com")),
    row("vs-sni-host-is-an-ip", "VirtualService", """
        hosts: [r]
        tls:
        - match:
          - sniHosts:
            - 10.0.0.1  #@a
          route: [{destination: {host: r}}]
        """, W("a", "spec.tls[0].match[0].sniHosts[0]: using an IP address ('10.0.0.1') goes against SNI spec "
                    "and most clients do not support this")),
    row("vs-gateway-name-not-a-string", "VirtualService", """
        hosts: [r]
        gateways:
        - 3  #@a
        http:
        - route: [{destination: {host: r}}]
        """, E("a", "spec.gateways[0]: must be a string, not number 3")),
    row("vs-gateway-name-wildcard", "VirtualService", """
        hosts: [r]
        gateways:
        - "*"  #@a
        http:
        - route: [{destination: {host: r}}]
        """, E("a", "spec.gateways[0]: invalid gateway name '*'")),
    row("vs-delegate-with-route", "VirtualService", """
        hosts: [r]
        http:
        - delegate: {name: d}  #@b
          route:  #@a
          - destination: {host: r}
        """, E("a", "spec.http[0].route: root HTTP route must not specify route together with delegate"),
        U("b", "http[0].delegate (VirtualService delegation)")),
    row("vs-direct-response-with-route", "VirtualService", """
        hosts: [r]
        http:
        - directResponse: {status: 503}
          route:  #@a
          - destination: {host: r}
        """, E("a", "spec.http[0].route: HTTP route cannot contain both route and directResponse")),
    row("vs-redirect-uri-and-prefix-rewrite", "VirtualService", """
        hosts: [r]
        http:
        - match:
          - uri: {exact: /a}  #@b
          redirect:  #@a
            uri: /b
            prefixRewrite: /c  #@c
        """, E("a", "spec.http[0].redirect: redirect may only specify one of uri or prefix_rewrite"),
        U("c", "http[0].redirect.prefixRewrite (redirect prefix rewriting)"),
        E("b", "spec.http[0].match[0].uri: redirect prefix_rewrite requires all URI matches to use prefix "
               "match type")),
    row("destination-host-wildcard", "VirtualService", """
        hosts: [r]
        http:
        - route:
          - destination:
              host: "*"  #@a
        """, E("a", "spec.http[0].route[0].destination.host: invalid destination host *")),
    row("destination-host-invalid", "VirtualService", """
        hosts: [r]
        http:
        - route:
          - destination:
              host: a_b  #@a
        """, E("a", "spec.http[0].route[0].destination.host: invalid host 'a_b': 'a_b' is not a valid DNS label")),
    row("destination-subset-invalid", "VirtualService", """
        hosts: [r]
        http:
        - route:
          - destination:
              host: r
              subset: V1  #@a
        """, E("a", "spec.http[0].route[0].destination.subset: subset name is invalid: V1")),
    row("destination-weight-not-an-integer", "VirtualService", """
        hosts: [r]
        http:
        - route:
          - destination: {host: r}
            weight: "50"  #@a
        """, E("a", "spec.http[0].route[0].weight: must be an integer, not string '50'")),
    row("retry-attempts-negative", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          retries:
            attempts: -1  #@a
        """, E("a", "spec.http[0].retries.attempts: attempts cannot be negative")),
    row("fault-empty", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          fault: {}  #@a
        """, E("a", "spec.http[0].fault: HTTP fault injection must have an abort and/or a delay")),
    row("fault-abort-grpc-status-unknown", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          fault:
            abort:
              grpcStatus: BOGUS  #@a
        """, E("a", "spec.http[0].fault.abort.grpcStatus: gRPC status 'BOGUS' is not supported (e.g. NOT_FOUND, "
                    "UNAVAILABLE)")),
    row("fault-abort-http2-error", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          fault:
            abort:
              http2Error: REFUSED_STREAM  #@a
        """, E("a", "spec.http[0].fault.abort.http2Error: HTTP/2 abort fault injection not supported yet")),
    row("fault-abort-without-error-type", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          fault:
            abort:  #@a
              percentage: {value: 10}
        """, W("a", "spec.http[0].fault.abort: abort configured, but error type not set")),
    row("fault-exponential-delay", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          fault:
            delay:
              exponentialDelay: 1s  #@a
        """, E("a", "spec.http[0].fault.delay.exponentialDelay: exponentialDelay not supported yet")),
    row("redirect-without-target", "VirtualService", """
        hosts: [r]
        http:
        - redirect:  #@a
            redirectCode: 301
        """, E("a", "spec.http[0].redirect: redirect must specify URI, authority, scheme, or port")),
    row("redirect-code-not-3xx", "VirtualService", """
        hosts: [r]
        http:
        - redirect:
            uri: /b
            redirectCode: 200  #@a
        """, E("a", "spec.http[0].redirect.redirectCode: 200 is not a valid redirect code, must be 3xx")),
    row("redirect-scheme", "VirtualService", """
        hosts: [r]
        http:
        - redirect:
            scheme: ftp  #@a
        """, E("a", 'spec.http[0].redirect.scheme: invalid redirect scheme, must be "http" or "https"')),
    row("rewrite-empty", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          rewrite: {}  #@a
        """, E("a", "spec.http[0].rewrite: rewrite must specify at least one of uri, uriRegexRewrite, or "
                    "authority")),
    row("regex-rewrite-without-rewrite", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          rewrite:
            uriRegexRewrite:  #@a
              match: ^/a
        """, E("a", "spec.http[0].rewrite.uriRegexRewrite: uriRegexRewrite requires both rewrite and match "
                    "fields to be specified")),
    row("direct-response-status", "VirtualService", """
        hosts: [r]
        http:
        - directResponse:
            status: 700  #@a
        """, E("a", "spec.http[0].directResponse.status: HTTP status 700 is not in range 200-599")),
    row("cors-max-age-sub-second", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          corsPolicy:
            allowOrigins: [{exact: "https://a.com"}]
            maxAge: 1500ms  #@a
        """, E("a", "spec.http[0].corsPolicy.maxAge: max_age duration is accurate only to seconds precision")),
    row("header-value-control-character", "VirtualService", r"""
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          headers:
            request:
              set:
                x-a: "a\nb"  #@a
        """, E("a", "spec.http[0].headers.request.set.x-a: header value configuration 'a\\nb' is invalid")),
    row("header-value-unescaped-percent", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          headers:
            response:
              add:
                x-ok: "100%% of %HOSTNAME% and %REQ(x-b)%"
                x-a: "100%"  #@a
        """, E("a", "spec.http[0].headers.response.add.x-a: header value configuration '100%': invalid or "
                    "unescaped '%' (write %% for a literal)")),
    row("header-name-empty", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          headers:
            request:
              set:  #@a
                "": v
              remove:
              - ""  #@b
        """, E("a", "spec.http[0].headers.request.set: header name cannot be empty"),
        E("b", "spec.http[0].headers.request.remove[0]: header name cannot be empty")),
    row("header-match-null", "VirtualService", """
        hosts: [r]
        http:
        - match:
          - headers:
              x-a:  #@a
          route: [{destination: {host: r}}]
        """, E("a", "spec.http[0].match[0].headers.x-a: header match x-a cannot be null")),
    row("prefix-match-empty", "VirtualService", """
        hosts: [r]
        http:
        - match:
          - uri:
              prefix: ""  #@a
          route: [{destination: {host: r}}]
        """, E("a", "spec.http[0].match[0].uri.prefix: prefix string match should not be empty")),
    row("authority-rewritten-twice", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          rewrite: {authority: a.com}
          headers:
            request:
              set:  #@a
                x-b: b
                host: b.com
        """, E("a", "spec.http[0].headers.request.set: authority header cannot be set multiple times: have "
                    "'a.com', attempting to set 'b.com'")),
]


@pytest.mark.parametrize("r", ROWS, ids=[r.id for r in ROWS])
def test_validate_prints_each_finding_naming_file_resource_and_field(r: Row, tmp_path: Path):
    text = document(r)
    path = tmp_path / f"{r.id}.yaml"
    path.write_text(text, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    code = meshctl(["validate", "-f", str(path)], out, err)
    printed = [line for line in (out.getvalue() + err.getvalue()).splitlines()
               if re.match(r"(Error|Warning|Info) \[", line) and "[PYM0003]" not in line]  # PYM0003: kind ignored
    # each `FILE:LINE` a finding names, written as the mark on that line (`@a`), or `@LINE` when unmarked
    by_line = {n: mark for mark, n in marks(text).items()}
    shown = [re.sub(re.escape(str(path)) + r":(\d+)", lambda m: "@" + by_line.get(int(m[1]), m[1]), line)
             for line in printed]
    ns = f"{r.namespace}/" if r.namespace else ""
    expected = [f"{level} [{code_}] ({r.kind} {ns}{r.name} @{mark}) {message}"
                for level, code_, mark, message in r.expect]
    assert sorted(shown) == sorted(expected)
    assert code == (1 if any(level == "Error" for level, *_ in r.expect) else 0)
