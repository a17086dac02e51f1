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
from control.istio import schema as S
from control.istio.validate import RULES, _scalar, check_spec, rule

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


EGRESS_PROXY_DEPRECATED = ("Warning", "IST0002", "a", "Deprecated: spec.outboundTrafficPolicy.egressProxy: "
                                                     "egressProxy is deprecated: it is ignored by Istio")


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
    """Mark -> line number; `spec`, `name` and `namespace` are the lines of those keys."""
    lines = text.splitlines()
    found = {m.group(1): n for n, line in enumerate(lines, 1) for m in re.finditer(r"#@(\w+)", line)}
    keys = {key: n for n, line in enumerate(lines, 1) for key in ("spec", "name", "namespace")
            if line.lstrip().startswith(f"{key}:") and (key == "spec") == (line == "spec:")}
    return {**keys, **found}


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
    row("vs-host-empty-and-invalid", "VirtualService", """
        hosts:
        - ""  #@a
        - a_b  #@b
        http:
        - route: [{destination: {host: r}}]
        """, E("a", "spec.hosts[0]: host must be a non-empty string"),
        E("b", "spec.hosts[1]: invalid host 'a_b': 'a_b' is not a valid DNS label")),
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
        """, E("a", "spec.gateways[0]: domain name '*' invalid (label '*' invalid)")),
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
    row("redirect-prefix-rewrite-with-prefix-matches", "VirtualService", """
        hosts: [r]
        http:
        - match:
          - uri: {prefix: /a}
          - headers: {x-a: {exact: b}}
          redirect:
            prefixRewrite: /c  #@a
        """, U("a", "http[0].redirect.prefixRewrite (redirect prefix rewriting)")),
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
    # --- DestinationRule, traffic policy -------------------------------------------------------------------
    row("dr-duplicate-subset-names", "DestinationRule", """
        host: r
        subsets:
        - name: v1
        - name: v1  #@a
        """, E("a", "spec.subsets[1].name: duplicate subset names: v1")),
    row("dr-subset-name-invalid", "DestinationRule", """
        host: r
        subsets:
        - name: V1  #@a
        """, E("a", "spec.subsets[0].name: subset name is invalid: V1")),
    row("port-policy-without-port-and-policy", "DestinationRule", """
        host: r
        trafficPolicy:
          portLevelSettings:
          - tls: {mode: SIMPLE}  #@a
          - port: {number: 80}  #@b
        """, E("a", "spec.trafficPolicy.portLevelSettings[0].port: portTrafficPolicy must have valid port"),
        E("b", "spec.trafficPolicy.portLevelSettings[1]: port traffic policy must have at least one field")),
    row("traffic-policy-empty", "DestinationRule", """
        host: r
        trafficPolicy: {}  #@a
        """, E("a", "spec.trafficPolicy: traffic policy must have at least one field")),
    row("connection-pool-empty", "DestinationRule", """
        host: r
        trafficPolicy:
          connectionPool: {}  #@a
        """, E("a", "spec.trafficPolicy.connectionPool: connection pool must have at least one field (tcp or "
                    "http)")),
    row("tcp-max-connections-negative", "DestinationRule", """
        host: r
        trafficPolicy:
          connectionPool:
            tcp:
              maxConnections: -1  #@a
        """, E("a", "spec.trafficPolicy.connectionPool.tcp.maxConnections: maxConnections must be non-negative")),
    row("outlier-error-code-not-http", "DestinationRule", """
        host: r
        trafficPolicy:
          outlierDetection:
            outlierDetectionHttpErrorCodes:  #@b
            - 503
            - 99  #@a
        """, E("a", "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[1]: 99 is not an HTTP "
                    "status (100-599)"),
        U("b", "trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes (custom outlier-detection error "
               "codes)")),
    row("outlier-local-origin-without-split", "DestinationRule", """
        host: r
        trafficPolicy:
          outlierDetection:
            consecutiveLocalOriginFailures: 5  #@a
        """, E("a", "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: consecutive local origin "
                    "failures is specified, but split external local origin errors is set to false")),
    row("locality-and-zone-aware-both-set", "DestinationRule", """
        host: r
        trafficPolicy:
          loadBalancer:
            localityLbSetting: {}  #@b
            zoneAwareLbSetting: {}  #@a
        """, E("a", "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting: only one of localityLbSetting and "
                    "zoneAwareLbSetting can be set"),
        U("b", "trafficPolicy.loadBalancer.localityLbSetting (locality load balancing)"),
        U("a", "trafficPolicy.loadBalancer.zoneAwareLbSetting (zone-aware load balancing)")),
    row("h2-upgrade-with-client-protocol", "DestinationRule", """
        host: r
        trafficPolicy:
          connectionPool:
            http:
              h2UpgradePolicy: UPGRADE
              useClientProtocol: true  #@a
        """, E("a", "spec.trafficPolicy.connectionPool.http.useClientProtocol: use client protocol must not be "
                    "true when H2UpgradePolicy is UPGRADE")),
    row("warmup-aggression-zero", "DestinationRule", """
        host: r
        trafficPolicy:
          loadBalancer:
            simple: ROUND_ROBIN
            warmup:
              duration: 10s
              aggression: 0  #@a
        """, E("a", "spec.trafficPolicy.loadBalancer.warmup.aggression: aggression should be greater than 0")),
    row("client-tls-insecure-skip-verify-with-ca", "DestinationRule", """
        host: r
        trafficPolicy:
          tls:
            mode: SIMPLE
            insecureSkipVerify: true
            caCertificates: /etc/ca.pem  #@a
        """, E("a", "spec.trafficPolicy.tls.caCertificates: cannot specify caCertificates when "
                    "insecureSkipVerify is set true")),
    row("client-tls-istio-mutual-with-sni", "DestinationRule", """
        host: r
        trafficPolicy:
          tls:
            mode: ISTIO_MUTUAL
            sni: r.example.com  #@a
        """, E("a", "spec.trafficPolicy.tls.sni: cannot specify sni with ISTIO_MUTUAL: Istio manages the "
                    "certificates")),

    # --- Gateway, Server, ServerTLSSettings --------------------------------------------------------------
    row("gateway-duplicate-server-names", "Gateway", """
        selector: {istio: ingressgateway}
        servers:
        - name: web
          port: {number: 80, name: http, protocol: HTTP}
          hosts: ["*/a.com"]
        - name: web  #@a
          port: {number: 81, name: http2, protocol: HTTP}
          hosts: ["*/a.com"]
        """, E("a", "spec.servers[1].name: server names must be unique: web")),
    row("gateway-https-redirect-on-https", "Gateway", """
        servers:
        - port: {number: 443, name: https, protocol: HTTPS}
          hosts: ["*/a.com"]
          tls:
            mode: SIMPLE
            credentialName: a-cert
            httpsRedirect: true  #@a
        """, W("a", "spec.servers[0].tls.httpsRedirect: tls.httpsRedirect should only be used with http servers")),
    row("gateway-host-not-a-string", "Gateway", """
        servers:
        - port: {number: 80, name: http, protocol: HTTP}
          hosts:
          - 3  #@a
        """, E("a", "spec.servers[0].hosts[0]: must be a string, not number 3")),
    row("gateway-host-empty-namespace", "Gateway", """
        servers:
        - port: {number: 80, name: http, protocol: HTTP}
          hosts:
          - /a.com  #@a
        """, E("a", "spec.servers[0].hosts[0]: config namespace and dnsName in host entry cannot be empty"),
        E("a", "spec.servers[0].hosts[0]: invalid namespace value '' in gateway")),
    row("gateway-host-bad-namespace", "Gateway", """
        servers:
        - port: {number: 80, name: http, protocol: HTTP}
          hosts:
          - Bad_NS/a.com  #@a
        """, E("a", "spec.servers[0].hosts[0]: invalid namespace value 'Bad_NS' in gateway")),
    row("gateway-host-short-name", "Gateway", """
        servers:
        - port: {number: 80, name: http, protocol: HTTP}
          hosts:
          - reviews  #@a
        """, E("a", "spec.servers[0].hosts[0]: short names (non FQDN) are not allowed")),
    row("gateway-host-partial-wildcard", "Gateway", """
        servers:
        - port: {number: 80, name: http, protocol: HTTP}
          hosts:
          - "*bar.com"  #@a
        """, E("a", "spec.servers[0].hosts[0]: partial wildcard '*bar.com' not allowed")),
    row("gateway-host-bad-label", "Gateway", """
        servers:
        - port: {number: 80, name: http, protocol: HTTP}
          hosts:
          - a_b.com  #@a
        """, E("a", "spec.servers[0].hosts[0]: domain name 'a_b.com' invalid (label 'a_b' invalid)")),
    row("server-unix-bind-with-port", "Gateway", """
        servers:
        - port:
            number: 80  #@a
            name: http
            protocol: HTTP
          bind: unix:///var/run/gw.sock
          hosts: ["*/a.com"]
        """, E("a", "spec.servers[0].port.number: port number must be 0 for unix domain socket")),
    row("server-unix-bind-port-zero-accepted", "Gateway", """
        servers:
        - port: {number: 0, name: http, protocol: HTTP}
          bind: unix:///var/run/gw.sock
          hosts: ["*/a.com"]
        """),
    row("server-port-zero", "Gateway", """
        servers:
        - port:
            number: 0  #@a
            name: http
            protocol: HTTP
          hosts: ["*/a.com"]
        """, E("a", "spec.servers[0].port.number: port number 0 must be in the range 1..65535")),
    row("server-http-with-tls-settings", "Gateway", """
        servers:
        - port: {number: 80, name: http, protocol: HTTP}
          hosts: ["*/a.com"]
          tls:  #@a
            mode: SIMPLE
            credentialName: a-cert
        """, E("a", "spec.servers[0].tls: server cannot have TLS settings for plain text HTTP ports (only "
                    "httpsRedirect)")),
    row("server-tls-mutual-without-files", "Gateway", """
        servers:
        - port: {number: 443, name: https, protocol: HTTPS}
          hosts: ["*/a.com"]
          tls:  #@a
            mode: MUTUAL
        """, E("a", "spec.servers[0].tls.serverCertificate: MUTUAL TLS requires a server certificate"),
        E("a", "spec.servers[0].tls.privateKey: MUTUAL TLS requires a private key"),
        E("a", "spec.servers[0].tls.caCertificates: MUTUAL TLS requires a client CA bundle")),
    row("server-tls-istio-mutual-with-credential", "Gateway", """
        servers:
        - port: {number: 443, name: https, protocol: HTTPS}
          hosts: ["*/a.com"]
          tls:
            mode: ISTIO_MUTUAL
            credentialName: a-cert  #@a
        """, E("a", "spec.servers[0].tls.credentialName: ISTIO_MUTUAL TLS cannot have associated credentialName")),
    row("connection-pool-empty-tcp-is-set", "DestinationRule", """
        host: r
        trafficPolicy:
          connectionPool: {tcp: {}}
        """),

    # --- ServiceEntry -------------------------------------------------------------------------------------
    row("se-wildcard-host", "ServiceEntry", """
        hosts:
        - "*"  #@a
        - a_b.com  #@b
        location: MESH_EXTERNAL
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        """, E("a", "spec.hosts[0]: invalid host *"),
        E("b", "spec.hosts[1]: invalid host 'a_b.com': 'a_b' is not a valid DNS label")),
    row("se-wildcard-dns-without-endpoints", "ServiceEntry", """
        hosts:
        - "*.a.com"  #@a
        resolution: DNS
        ports: [{number: 80, name: http, protocol: HTTP}]
        """, E("a", "spec.hosts[0]: wildcard host *.a.com cannot be resolved with DNS resolution without "
                    "endpoints")),
    row("se-cidr-with-dns", "ServiceEntry", """
        hosts: [a.com]
        addresses:  #@a
        - 10.0.0.0/24
        resolution: DNS
        ports: [{number: 80, name: http, protocol: HTTP}]
        """, E("a", "spec.addresses: CIDR addresses are allowed only for NONE/STATIC resolution types")),
    row("se-endpoints-with-resolution-none", "ServiceEntry", """
        hosts: [a.com]
        addresses: [10.0.0.1]
        resolution: NONE
        endpoints:  #@a
        - address: 10.0.0.2
        ports: [{number: 80, name: http, protocol: HTTP}]
        """, E("a", "spec.endpoints: no endpoints should be provided for resolution type none")),
    row("se-dns-round-robin-two-endpoints", "ServiceEntry", """
        hosts: [a.com]
        resolution: DNS_ROUND_ROBIN
        endpoints:  #@a
        - address: a1.com
        - address: a2.com
        ports: [{number: 80, name: http, protocol: HTTP}]
        """, E("a", "spec.endpoints: there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN")),
    row("se-dynamic-dns", "ServiceEntry", """
        hosts:
        - a.com  #@a
        addresses: [10.0.0.1]  #@b
        resolution: DYNAMIC_DNS
        endpoints:  #@c
        - address: a1.com
        ports:
        - number: 5432
          name: pg
          protocol: TCP  #@d
        """, E("a", "spec.hosts[0]: host must be wildcarded for resolution mode DYNAMIC_DNS"),
        E("b", "spec.addresses: addresses cannot be set for resolution type DYNAMIC_DNS"),
        E("c", "spec.endpoints: endpoints cannot be set for resolution type DYNAMIC_DNS"),
        E("d", "spec.ports[0].protocol: only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution "
               "type DYNAMIC_DNS")),
    row("se-dynamic-dns-accepted", "ServiceEntry", """
        hosts: ["*.a.com"]
        resolution: DYNAMIC_DNS
        ports: [{number: 443, name: tls, protocol: TLS}]
        """),
    row("se-duplicate-ports", "ServiceEntry", """
        hosts: [a.com]
        resolution: DNS
        ports:
        - {number: 80, name: http, protocol: HTTP}
        - number: 80  #@a
          name: http  #@b
          protocol: HTTP
        """, E("a", "spec.ports[1].number: service entry port 80 already defined"),
        E("b", "spec.ports[1].name: service entry port name http already defined")),
    row("se-static-unix-endpoint-needs-one-port", "ServiceEntry", """
        hosts: [a.internal]
        resolution: STATIC
        endpoints:
        - address: unix:///var/run/a.sock  #@a
        ports:
        - {number: 80, name: http, protocol: HTTP}
        - {number: 81, name: http2, protocol: HTTP}
        """, E("a", "spec.endpoints[0].address: exactly 1 service port required for unix endpoints")),
    row("se-static-endpoint-not-an-ip", "ServiceEntry", """
        hosts: [a.internal]
        resolution: STATIC
        endpoints:
        - address: a.com  #@a
          ports: {http: 8080, grpc: 9090}  #@b
        - labels: {app: a}  #@c
        ports: [{number: 80, name: http, protocol: HTTP}]
        """, E("a", "spec.endpoints[0].address: endpoint address 'a.com' is not a valid IP address"),
        E("c", "spec.endpoints[1].address: address is required"),
        E("b", "spec.endpoints[0].ports: endpoint port grpc is not defined by the service entry")),
    row("se-dns-endpoint-not-an-fqdn", "ServiceEntry", """
        hosts: [a.com]
        resolution: DNS
        endpoints:
        - address: "*.a.com"  #@a
        ports: [{number: 80, name: http, protocol: HTTP}]
        """, E("a", "spec.endpoints[0].address: endpoint address '*.a.com' is not a valid FQDN or an IP address")),
    row("se-selector-wildcard-ends-the-warnings", "ServiceEntry", """
        hosts: [a.internal]
        location: MESH_INTERNAL
        resolution: STATIC
        workloadSelector:
          labels:
            app: "a*"  #@a
        ports: [{number: 80, name: http, protocol: HTTP}]
        """, E("a", "spec.workloadSelector.labels.app: wildcard is not supported in selector: \"app=a*\"")),
    row("se-selector-with-resolution-none", "ServiceEntry", """
        hosts: [a.internal]
        addresses: [10.0.0.1]
        location: MESH_INTERNAL
        resolution: NONE
        workloadSelector:  #@a
          labels: {app: a}
        ports: [{number: 80, name: http, protocol: HTTP}]
        """, W("a", "spec.workloadSelector: workloadSelector should not be set when resolution mode is NONE")),
    row("se-partial-wildcard-host", "ServiceEntry", """
        hosts:
        - "*a.com"  #@a
        addresses: [10.0.0.1]
        resolution: NONE
        ports: [{number: 80, name: http, protocol: HTTP}]
        """, W("a", "spec.hosts[0]: partial wildcard '*a.com' not allowed")),
    row("se-two-hosts-with-address-and-tcp-port", "ServiceEntry", """
        hosts:  #@a
        - a.com
        - b.com
        addresses: [10.0.0.1]
        resolution: DNS
        ports: [{number: 5432, name: pg, protocol: TCP}]
        """, W("a", "spec.hosts: service entry can not have more than one host specified simultaneously with "
                    "address and tcp port")),

    # --- WorkloadEntry ------------------------------------------------------------------------------------
    row("we-address-missing", "WorkloadEntry", """
        labels: {app: a}
        """, E("spec", "spec.address: address is required")),
    row("we-address-unset-with-network", "WorkloadEntry", """
        network: net2  #@b
        """, W("spec", "spec.address: address is unset with network 'net2'"),
        U("b", "network (multi-network)")),
    row("we-address-invalid", "WorkloadEntry", """
        address: a_b.com  #@a
        """, E("a", "spec.address: invalid address 'a_b.com': not an IP, DNS name or unix:// socket")),
    row("we-uds-relative", "WorkloadEntry", """
        address: unix://a.sock  #@a
        """, E("a", "spec.address: UDS must be an absolute path or abstract socket")),
    row("we-uds-dir-with-ports", "WorkloadEntry", """
        address: unix:///var/run/  #@a
        ports:  #@b
          http: 8080
        """, E("a", "spec.address: UDS may not be a dir"), E("b", "spec.ports: UDS may not include ports")),
    row("we-port-name-invalid", "WorkloadEntry", """
        address: 10.0.0.1
        ports:  #@a
          http-: 8080
        """, E("a", "spec.ports: invalid port name 'http-': letters, digits and '-' (not at either end)")),

    # --- Sidecar, selectors -------------------------------------------------------------------------------
    row("sidecar-egress-host-without-namespace", "Sidecar", """
        egress:
        - hosts:
          - a.com  #@a
          - Bad_NS/a.com  #@b
          - ./a_b.com  #@c
        """, E("a", "spec.egress[0].hosts[0]: host must be of form namespace/dnsName"),
        E("b", "spec.egress[0].hosts[1]: invalid namespace value 'Bad_NS' in sidecar"),
        E("c", "spec.egress[0].hosts[2]: domain name 'a_b.com' invalid (label 'a_b' invalid)")),
    row("sidecar-empty", "Sidecar", """
        workloadSelector:
          labels: {app: a}
        """, E("spec", "spec: sidecar: empty configuration provided")),
    row("sidecar-selector-empty-key", "Sidecar", """
        workloadSelector:
          labels:  #@a
            "": a
        outboundTrafficPolicy: {mode: REGISTRY_ONLY}
        """, E("a", "spec.workloadSelector.labels: empty key is not supported in selector: \"=a\"")),
    row("pa-port-level-empty-and-bad-port", "PeerAuthentication", """
        portLevelMtls: {}  #@a
        """, E("a", "spec.portLevelMtls: portLevelMtls requires selector"),
        E("a", "spec.portLevelMtls: port level mtls must have at least one entry")),
    row("pa-port-level-port-not-a-number", "PeerAuthentication", """
        selector:
          matchLabels: {app: a}
        portLevelMtls:
          http:  #@a
            mode: DISABLE
        """, E("a", "spec.portLevelMtls.http: port 'http' must be a number in 1..65535")),
    row("selector-empty-key-and-wildcards", "PeerAuthentication", """
        selector:
          matchLabels:  #@a
            "": a
            "a*": b
            app: "*"  #@b
        mtls: {mode: STRICT}
        """, E("a", "spec.selector.matchLabels: key must not be empty"),
        E("a", "spec.selector.matchLabels: wildcard not allowed in label key match"),
        E("b", "spec.selector.matchLabels.app: wildcard not allowed in label value match")),
    # --- AuthorizationPolicy ------------------------------------------------------------------------------
    row("ap-deny-without-rules", "AuthorizationPolicy", """
        action: DENY
        """, E("spec", "spec.rules: DENY action without `rules` is meaningless as it will never be triggered, add "
                       "an empty rule `{}` if you want it be triggered for every request")),
    row("ap-custom-without-provider-name", "AuthorizationPolicy", """
        action: CUSTOM
        provider: {}  #@a
        rules: [{}]
        """, E("a", "spec.provider: `provider.name` must not be empty"),
        E("a", "spec.provider.name: name is required"), U("a", "provider (CUSTOM (ext_authz) authorization)")),
    row("ap-provider-with-allow", "AuthorizationPolicy", """
        provider:  #@a
          name: ext
        rules: [{}]
        """, E("a", "spec.provider: `provider` must not be with non CUSTOM action, found ALLOW"),
        U("a", "provider (CUSTOM (ext_authz) authorization)")),
    row("ap-from-empty-nil-and-empty-source", "AuthorizationPolicy", """
        rules:
        - from: []  #@a
        - to:
          - {}  #@b
          - operation: {}  #@c
        """, E("a", "spec.rules[0].from: `from` must not be empty, found at rule 0"),
        E("b", "spec.rules[1].to[0]: `to.operation` must not be nil, found at rule 1"),
        E("c", "spec.rules[1].to[1].operation: `to.operation` must not be empty, found at rule 1")),
    row("ap-custom-unsupported-source-and-key", "AuthorizationPolicy", """
        action: CUSTOM
        provider: {name: ext}  #@p
        rules:
        - from:
          - source:
              principals: [cluster.local/ns/a/sa/b]  #@a
              ipBlocks: [10.0.0.0/8]
          when:
          - key: request.auth.claims[iss]  #@b
            values: [x]
          - key: request.headers[x-a]
            values: [b]
        """, E("a", "spec.rules[0].from[0].source.principals: From.Principals is currently not supported with "
                    "CUSTOM action"),
        E("b", "spec.rules[0].when[0].key: request.auth.claims[iss] is currently not supported with CUSTOM "
               "action"), U("p", "provider (CUSTOM (ext_authz) authorization)")),
    row("source-checks", "AuthorizationPolicy", """
        rules:
        - from:
          - source:
              serviceAccounts: [a]  #@a
              namespaces: [ns1]
          - source:
              principals:
              - spiffe://cluster.local/ns/a/sa/b  #@b
          - source:
              notServiceAccounts: [a/b/c]  #@c
          - source:
              trustDomains: ["a*b"]  #@d
          - source:
              notTrustDomains: [a/b]  #@e
          - source:
              requestPrincipals: [""]  #@f
          - source:
              notIpBlocks: [10.0.0.0/8, 10.0.0.300]  #@g
        """, E("a", "spec.rules[0].from[0].source.serviceAccounts: cannot set serviceAccounts with namespaces or "
                    "principals"),
        E("b", "spec.rules[0].from[1].source.principals[0]: principals must not include the spiffe:// prefix: "
               "spiffe://cluster.local/ns/a/sa/b"),
        E("c", "spec.rules[0].from[2].source.notServiceAccounts: expected format 'serviceAccount' or "
               "'namespace/serviceAccount', found 'a/b/c' in notServiceAccounts"),
        E("d", "spec.rules[0].from[3].source.trustDomains: wildcard is only allowed once, at the start or end, "
               "found in trustDomains: 'a*b'"),
        E("e", "spec.rules[0].from[4].source.notTrustDomains: trust domain must not contain '/', found in "
               "notTrustDomains"),
        E("f", "spec.rules[0].from[5].source.requestPrincipals: empty value not allowed, found in "
               "requestPrincipals"),
        E("g", "spec.rules[0].from[6].source.notIpBlocks: bad IP address or CIDR range (10.0.0.300)")),
    row("source-too-many-service-accounts", "AuthorizationPolicy", f"""
        rules:
        - from:
          - source:
              serviceAccounts: [{", ".join(f"sa{i}" for i in range(17))}]  #@a
        """, E("a", "spec.rules[0].from[0].source.serviceAccounts: may not have more than 16 values")),
    row("operation-checks", "AuthorizationPolicy", """
        rules:
        - to:
          - operation:
              ports:
              - http  #@a
              methods: [""]  #@b
        """, E("a", "spec.rules[0].to[0].operation.ports[0]: invalid port 'http': ports are strings of a number "
                    "in 1..65535"),
        E("b", "spec.rules[0].to[0].operation.methods: empty value not allowed, found in methods")),
    row("condition-without-values", "AuthorizationPolicy", """
        rules:
        - when:
          - key: source.ip  #@a
        """, E("a", "spec.rules[0].when[0]: at least one of values or notValues must be set for key source.ip")),
    row("condition-values", "AuthorizationPolicy", """
        rules:
        - when:
          - key: source.ip
            values: [""]  #@a
          - key: source.serviceAccount
            notValues: ["a*"]  #@b
          - key: source.trustDomain
            values: ["a*b"]  #@c
          - {key: destination.namespace, values: [a]}  #@d
          - {key: "destination.labels[app]", values: [a]}  #@e
          - {key: destination.user, values: [a]}  #@f
          - {key: request.bogus, values: [a]}  #@g
          - {key: request.headers, values: [a]}  #@h
          - key: destination.port
            values: ["70000"]  #@i
          - key: connection.sni
            values: [a.com]
          - key: remote.ip
            values: [10.0.0.0/33]  #@j
        """, E("a", "spec.rules[0].when[0].values: invalid `values` for `key` source.ip: empty value not allowed, "
                    "found in source.ip"),
        E("b", "spec.rules[0].when[1].notValues: invalid `notValues` for `key` source.serviceAccount: expected "
               "format 'serviceAccount' or 'namespace/serviceAccount', found 'a*' in source.serviceAccount"),
        E("c", "spec.rules[0].when[2].values: invalid `values` for `key` source.trustDomain: wildcard is only "
               "allowed once, at the start or end, found in source.trustDomain: 'a*b'"),
        # a key's own error is given for values and for notValues, set or not, as Istio's ValidateAttribute does
        *(E(mark, f"spec.rules[0].when[{i}].{field}: invalid `{field}` for `key` {key}: {error}")
          for mark, i, key, error in [
              ("d", 3, "destination.namespace", "attribute destination.namespace is replaced by the "
                                                "metadata.namespace"),
              ("e", 4, "destination.labels[app]", "attribute destination.labels[app] is replaced by the workload "
                                                  "selector"),
              ("f", 5, "destination.user", "deprecated attribute destination.user: only supported in v1alpha1"),
              ("g", 6, "request.bogus", "unknown attribute: request.bogus"),
              ("h", 7, "request.headers", "bad key (request.headers): should have format a[b]")]
          for field in ("values", "notValues")),
        E("i", "spec.rules[0].when[8].values: invalid `values` for `key` destination.port: bad port (70000)"),
        E("j", "spec.rules[0].when[10].values: invalid `values` for `key` remote.ip: bad IP address or CIDR "
               "range (10.0.0.0/33)")),

    # --- RequestAuthentication, policy target references ---------------------------------------------------
    row("jwt-rule-checks", "RequestAuthentication", """
        jwtRules:
        - issuer: https://a.com
          jwksUri: ftp://a.com/keys  #@a
          audiences:
          - ""  #@b
          outputClaimToHeaders:
          - header: ":authority"  #@c
            claim: sub
        """, E("a", "spec.jwtRules[0].jwksUri: jwksUri 'ftp://a.com/keys' is not a valid http(s) URL (host, "
                    "optional numeric port)"),
        E("b", "spec.jwtRules[0].audiences[0]: must not be empty"),
        E("c", "spec.jwtRules[0].outputClaimToHeaders[0].header: invalid header name ':authority': letters, "
               "digits, '-' and '_' only")),
    row("target-ref-checks", "RequestAuthentication", """
        targetRef:  #@t
          group: Bad_Group  #@a
          kind: 1Gateway  #@b
          name: gw
          namespace: other  #@c
        """, E("t", "spec.targetRef: targetRef must be to one of core/Service, gateway.networking.k8s.io/Gateway, "
                    "gateway.networking.k8s.io/GatewayClass, networking.istio.io/ServiceEntry but was "
                    "Bad_Group/1Gateway"),
        E("a", "spec.targetRef.group: invalid group 'Bad_Group'"),
        E("b", "spec.targetRef.kind: invalid kind '1Gateway'"),
        E("c", "spec.targetRef.namespace: cross namespace referencing is not currently supported")),

    # --- Telemetry ----------------------------------------------------------------------------------------
    row("telemetry-tracing-nil-tag", "Telemetry", """
        tracing:
        - customTags:
            my-tag:  #@a
        """, E("a", "spec.tracing[0].customTags.my-tag: tag 'my-tag' may not have a nil value")),
    row("telemetry-metric-overrides", "Telemetry", """
        metrics:
        - providers: [{name: prometheus}]
          overrides:
          - match:
              customMetric: ""  #@a
            tagOverrides:
              a:  #@b
                operation: UPSERT
              b:
                operation: REMOVE
                value: "'x'"  #@c
              c:
                value: request-id  #@d
        """, E("a", "spec.metrics[0].overrides[0].match.customMetric: customMetric must not be empty"),
        E("b", "spec.metrics[0].overrides[0].tagOverrides.a.value: value must be set when operation is UPSERT"),
        E("c", "spec.metrics[0].overrides[0].tagOverrides.b.value: value must only be set when operation is "
               "UPSERT"),
        ("Warning", "PYM0010", "d", "spec.metrics[0].overrides[0].tagOverrides.c.value: value is a CEL "
                                    "expression: request-id parses as a subtraction of attribute names; to set "
                                    "the literal write \"'request-id'\"")),

    # --- kinds only validated: EnvoyFilter, ProxyConfig, WasmPlugin, WorkloadGroup ---------------------------
    row("envoy-filter-waypoint-context", "EnvoyFilter", """
        configPatches:
        - applyTo: HTTP_FILTER
          match:  #@a
            context: WAYPOINT
          patch: {operation: MERGE}
        """, E("a", "spec.configPatches[0].match: only support waypointMatch when context is WAYPOINT")),
    row("validated-only-kinds-accepted", "WasmPlugin", """
        url: oci://registry.example.com/f:1.0
        sha256: %s
        """ % ("a" * 64)),
    row("proxy-config-concurrency", "ProxyConfig", """
        concurrency: -1  #@a
        """, E("a", "spec.concurrency: concurrency must be greater than or equal to 0")),
    row("proxy-config-accepted", "ProxyConfig", """
        concurrency: 2
        """),
    row("wasm-plugin-checks", "WasmPlugin", """
        url: ftp://a.com/f.wasm  #@a
        sha256: ABC  #@b
        imagePullSecret: ""  #@c
        vmConfig:
          env:
          - name: A
            valueFrom: HOST
            value: x  #@d
          - name: A  #@e
        """, E("a", "spec.url: url must have schema one of [http, https, file, oci]"),
        E("b", "spec.sha256: sha256 must be 64 lowercase hex digits"),
        E("c", "spec.imagePullSecret: imagePullSecret must not be empty"),
        E("d", "spec.vmConfig.env[0].value: value may only be set when valueFrom is INLINE"),
        E("e", "spec.vmConfig.env[1].name: duplicate env name 'A'")),
    row("wasm-plugin-url-unescaped-percent", "WasmPlugin", """
        url: oci://a.com/f%zz  #@a
        """, E("a", "spec.url: url must have schema one of [http, https, file, oci]")),
    row("workload-group-probe", "WorkloadGroup", """
        template:
          address: 10.0.0.1
        probe:
          httpGet:
            port: 8080
            scheme: FTP  #@a
            httpHeaders:
            - name: x-ok
              value: b
            - name: "x a"  #@b
              value: b
        """, E("a", "spec.probe.httpGet.scheme: scheme must be one of [HTTP, HTTPS]"),
        E("b", "spec.probe.httpGet.httpHeaders[1].name: invalid header name 'x a': letters, digits, '-' and '_' "
               "only")),

    # --- rules ported later: CORS, port selector, cookies, server TLS, Sidecar, probes, JWKS, labels ---------
    row("vs-hosts-not-a-list", "VirtualService", """
        hosts: r  #@a
        http:
        - route: [{destination: {host: r}}]
        """, E("a", "spec.hosts: must be a list, not string 'r'")),
    row("port-selector-zero", "VirtualService", """
        hosts: [r]
        http:
        - route:
          - destination:
              host: r
              port: {number: 0}  #@a
        """, E("a", "spec.http[0].route[0].destination.port.number: port number 0 must be in the range 1..65535")),
    row("port-selector-empty", "VirtualService", """
        hosts: [r]
        http:
        - route:
          - destination:
              host: r
              port: {}  #@a
        """, E("a", "spec.http[0].route[0].destination.port.number: port number 0 must be in the range 1..65535")),
    row("vs-delegate-without-hosts", "VirtualService", """
        http:
        - route: [{destination: {host: r}}]
        """),
    row("cors-methods-and-headers", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          corsPolicy:
            allowMethods: [GET, FETCH]  #@a
            allowHeaders: ["", "*", x-ok]  #@b
            exposeHeaders: ["x y"]  #@c
        """, E("a", "spec.http[0].corsPolicy.allowMethods[1]: 'FETCH' is not a supported HTTP method"),
        E("b", "spec.http[0].corsPolicy.allowHeaders[0]: header name cannot be empty"),
        E("c", "spec.http[0].corsPolicy.exposeHeaders[0]: header name x y is not a valid header name")),
    row("cookie-attribute-duplicate", "DestinationRule", """
        host: r
        trafficPolicy:
          loadBalancer:
            consistentHash:
              httpCookie:
                name: c
                ttl: 0s
                attributes:
                - name: SameSite
                - {}  #@b
                - name: SameSite  #@a
        """, E("b", "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[1].name: name is required"),
        E("a", "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[2].name: duplicate cookie "
               "attribute name: SameSite")),
    row("gateway-tls-ciphers-and-old-versions", "Gateway", """
        servers:
        - port: {number: 443, name: https, protocol: HTTPS}
          hosts: ["*"]
          tls:
            mode: SIMPLE
            credentialName: c
            cipherSuites: [NOPE, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, "-X"]  #@a
        - port: {number: 8443, name: https2, protocol: HTTPS}
          hosts: ["*"]
          tls:
            mode: SIMPLE
            credentialName: c
            minProtocolVersion: TLSV1_1  #@c
        """, W("a", "spec.servers[0].tls.cipherSuites: ignoring invalid cipher suites: ['NOPE']"),
        W("a", "spec.servers[0].tls.cipherSuites: ignoring duplicate cipher suites: ['ECDHE-RSA-AES128-GCM-SHA256']"),
        W("c", "spec.servers[1].tls.minProtocolVersion: TLS version below TLSV1_2 require setting compatible ciphers "
               "as by default they no longer include compatible ciphers.")),
    row("gateway-tls-certificate-sources", "Gateway", """
        servers:
        - port: {number: 443, name: https, protocol: TLS}
          hosts: ["*"]
          tls:  #@a
            mode: PASSTHROUGH
            credentialName: c
        - port: {number: 8443, name: https2, protocol: HTTPS}
          hosts: ["*"]
          tls:  #@b
            mode: MUTUAL
            serverCertificate: /c.pem
            privateKey: /k.pem
            caCertificates: /ca.pem
            caCrl: /crl.pem
            tlsCertificates:  #@c
            - {serverCertificate: /1.pem, privateKey: /1.key}
            - {serverCertificate: /2.pem, privateKey: /2.key}
            - {serverCertificate: /3.pem, privateKey: /3.key}
        """, W("a", "spec.servers[0].tls: PASSTHROUGH mode does not use certificates, they will be ignored"),
        W("c", "spec.servers[1].tls.tlsCertificates: MUTUAL TLS can support up to 2 server certificates"),
        E("b", "spec.servers[1].tls: only one of credential_name, credential_names, server_certificate/private_key, "
               "tls_certificates should be specified")),
    row("gateway-tls-crl", "Gateway", """
        servers:
        - port: {number: 443, name: tls, protocol: TLS}
          hosts: ["*"]
          tls:  #@c
            mode: PASSTHROUGH  # SIMPLE or MUTUAL with a credential skip the CRL check, as in Istio
            credentialName: c
            caCrl: /crl.pem  #@a
        - port: {number: 8443, name: https2, protocol: HTTPS}
          hosts: ["*"]
          tls:
            mode: SIMPLE
            serverCertificate: /c.pem
            privateKey: /k.pem
            caCrl: /crl.pem  #@b
        """, W("c", "spec.servers[0].tls: PASSTHROUGH mode does not use certificates, they will be ignored"),
        E("a", "spec.servers[0].tls.caCrl: CRL is not supported with credentialName. CRL has to be specified in the "
               "credential"),
        E("b", "spec.servers[1].tls.caCrl: CRL is not supported with SIMPLE TLS")),
    row("workload-group-uds-with-ports", "WorkloadGroup", """
        metadata:
          labels:
            "bad key!": v  #@a
            ok: "bad value!"  #@b
        template:
          address: unix:///var/run/app.sock
          ports: {http: 8080}  #@c
        probe:  #@e
          periodSeconds: -1  #@d
        """, E("a", "spec.metadata.labels.bad key!: invalid labels: invalid tag key: 'bad key!'"),
        E("b", "spec.metadata.labels.ok: invalid labels: invalid tag value: 'bad value!'"),
        E("c", "spec.template.ports: UDS may not include ports"),
        E("d", "spec.probe.periodSeconds: periodSeconds must be non-negative"),
        E("e", "spec.probe: unknown health check method: one of httpGet, tcpSocket or exec is required")),
    row("workload-group-probe-method-http", "WorkloadGroup", """
        template:
          address: 10.0.0.1
        probe:
          httpGet: {port: 8080, scheme: HTTPS}
        """),
    row("sidecar-egress-host-forms", "Sidecar", """
        egress:
        - hosts:  #@f
          - ns1/a.b.123  #@a
          - ns1/a.com.
          - ns1/a_b.com  #@b
          - /a.com  #@c
          - ns1/foo  #@d
          - "ns1/*x.com"  #@e
          - "*/*"
          - ns2/b.com
        """, W("f", "spec.egress[0].hosts: `*/*` host select all resources, no other hosts can be added"),
        E("a", "spec.egress[0].hosts[0]: domain name 'b.123' invalid (top level domain '123' cannot be all-numeric)"),
        E("b", "spec.egress[0].hosts[2]: domain name 'a_b.com' invalid (label 'a_b' invalid)"),
        E("c", "spec.egress[0].hosts[3]: config namespace and dnsName in host entry cannot be empty"),
        E("d", "spec.egress[0].hosts[4]: short names (non FQDN) are not allowed"),
        E("e", "spec.egress[0].hosts[5]: partial wildcard '*x.com' not allowed")),
    row("sidecar-egress-host-too-long", "Sidecar", f"""
        egress:
        - hosts:
          - ns1/{".".join(["a" * 60] * 5)}  #@a
        """, E("a", f"spec.egress[0].hosts[0]: domain name '{'.'.join(['a' * 60] * 5)}' too long (max 255)")),
    row("sidecar-egress-host-not-a-string", "Sidecar", """
        egress:
        - hosts:
          - 3  #@a
        """, E("a", "spec.egress[0].hosts[0]: must be a string, not number 3")),
    row("sidecar-ingress-ports", "Sidecar", """
        ingress:
        - port: {number: 70000, name: Bad_Name, protocol: HTTP, targetPort: 8080}  #@a
          bind: not-an-ip  #@b
          defaultEndpoint: unix://relative.sock  #@c
        - port: {number: 8080, protocol: HTTP}
          defaultEndpoint: foo  #@d
        - port: {number: 8080, protocol: HTTP}  #@e
          defaultEndpoint: 10.0.0.1:80  #@f
        - port: {number: 8081, protocol: HTTP}
          defaultEndpoint: 127.0.0.1:x  #@g
        - port: {number: 8082, protocol: HTTP}
          defaultEndpoint: "[::1]:0"  #@h
        - port: {number: 8083, protocol: HTTP}
          defaultEndpoint: "[::1]:8083"
        """, E("a", "spec.ingress[0].port.name: invalid port name: Bad_Name"),
        E("a", "spec.ingress[0].port.targetPort: targetPort has no impact on Sidecars"),
        E("a", "spec.ingress[0].port.number: port number 70000 must be in the range 1..65535"),
        E("b", "spec.ingress[0].bind: not-an-ip is not a valid IP"),
        E("c", "spec.ingress[0].defaultEndpoint: relative.sock is not an absolute path to a file"),
        E("d", "spec.ingress[1].defaultEndpoint: address foo: not of the form host:port"),
        E("d", "spec.ingress[1].defaultEndpoint: sidecar: defaultEndpoint port () is not a number"),
        E("e", "spec.ingress[2].port.number: sidecar: ports on IP bound listeners must be unique"),
        E("f", "spec.ingress[2].defaultEndpoint: sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,"
               "0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset"),
        E("g", "spec.ingress[3].defaultEndpoint: sidecar: defaultEndpoint port (x) is not a number"),
        E("h", "spec.ingress[4].defaultEndpoint: port number 0 must be in the range 1..65535")),
    row("sidecar-ingress-without-port-and-good-tls", "Sidecar", """
        ingress:
        - defaultEndpoint: 127.0.0.1:8080  #@a
        - port: {number: 8443, protocol: HTTPS}
          defaultEndpoint: unix:///var/run/app.sock
          tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}
        - port: {number: 8444, protocol: TLS}
        """, E("a", "spec.ingress[0].port: port is required")),
    row("sidecar-egress-unix-binds", "Sidecar", """
        egress:
        - port: {number: 0}
          bind: "unix://"  #@a
          hosts: [ns1/a.com]
        - port: {number: 0}
          bind: unix://@abstract
          hosts: [ns1/a.com]
        """, E("a", "spec.egress[0].bind: unix address must not be empty")),
    row("sidecar-ingress-tls-and-pool", "Sidecar", """
        ingress:
        - port: {number: 8080, protocol: HTTP}
          defaultEndpoint: 127.0.0.1:8080
          tls:  #@a
            mode: ISTIO_MUTUAL  #@b
            subjectAltNames: [a]  #@c
        - port: {number: 9000, protocol: TCP, name: db}
          defaultEndpoint: 127.0.0.1:9000
          connectionPool:
            http: {http1MaxPendingRequests: 10}  #@d
        """, W("d", "spec.ingress[1].connectionPool.http: sidecar: HTTP connection pool settings are configured for "
                    "port 9000 (\"db\") but its protocol is not HTTP (TCP); only TCP settings will apply"),
        E("c", "spec.ingress[0].tls.subjectAltNames: sidecar: subjectAltNames is not supported in ingress tls"),
        E("b", "spec.ingress[0].tls.mode: configuration is invalid: cannot set mode to ISTIO_MUTUAL in sidecar "
               "ingress tls"),
        E("a", "spec.ingress[0].tls: server cannot have TLS settings for non HTTPS/TLS ports")),
    row("sidecar-egress-listeners", "Sidecar", """
        egress:
        - hosts: [ns1/a.com]  #@a
        - port: {number: 0}
          bind: 10.0.0.1  #@b
          hosts: [ns1/a.com]
        - port: {number: 0}
          bind: unix://relative  #@c
          captureMode: IPTABLES  #@d
          hosts: [ns1/a.com]
        - port: {number: 0}
          bind: unix:///a.sock
          hosts: [ns1/a.com]
        - port: {number: 0}
          bind: unix:///a.sock  #@e
          hosts: [ns1/a.com]
        - port: {number: 80}
          hosts: [ns1/a.com]
        - port: {number: 80}  #@f
          hosts: [ns1/a.com]
        - hosts: [ns1/b.com]  #@g
        - hosts: [ns1/c.com]
        """, E("a", "spec.egress[0]: sidecar: the egress listener with empty port should be the last listener in "
                    "the list"),
        E("b", "spec.egress[1].bind: sidecar: ports with 0 value must have a unix domain socket bind address"),
        E("c", "spec.egress[2].bind: relative is not an absolute path to a file"),
        E("d", "spec.egress[2].captureMode: sidecar: captureMode must be DEFAULT/NONE for unix domain socket "
               "listeners"),
        E("e", "spec.egress[4].bind: sidecar: unix domain socket values for listeners must be unique"),
        E("f", "spec.egress[6].port.number: sidecar: ports on IP bound listeners must be unique"),
        E("g", "spec.egress[7]: sidecar: the egress listener with empty port should be the last listener in the "
               "list")),
    row("sidecar-egress-proxy", "Sidecar", """
        outboundTrafficPolicy:
          mode: REGISTRY_ONLY
          egressProxy: {host: a.com, port: {number: 80}}  #@a
        """, EGRESS_PROXY_DEPRECATED,
        E("a", "spec.outboundTrafficPolicy.egressProxy: sidecar: egress_proxy must be set only with ALLOW_ANY "
               "outbound_traffic_policy mode")),
    row("sidecar-egress-proxy-host-and-port", "Sidecar", """
        outboundTrafficPolicy:
          mode: ALLOW_ANY
          egressProxy:  #@a
            host: a_b.com  #@b
        """, EGRESS_PROXY_DEPRECATED,
        E("b", "spec.outboundTrafficPolicy.egressProxy.host: invalid host 'a_b.com': 'a_b' is not a valid DNS label"),
        E("a", "spec.outboundTrafficPolicy.egressProxy.port: sidecar: egress_proxy port must be non-nil")),
    row("sidecar-egress-proxy-wildcard-host", "Sidecar", """
        outboundTrafficPolicy:
          mode: ALLOW_ANY
          egressProxy:  #@a
            host: "*.a.com"  #@b
            port: {number: 80}
        """, EGRESS_PROXY_DEPRECATED,
        E("b", "spec.outboundTrafficPolicy.egressProxy.host: domain name '*.a.com' invalid (label '*' invalid)")),
    row("pa-port-level-not-a-map", "PeerAuthentication", """
        selector: {matchLabels: {app: a}}
        portLevelMtls: 3  #@a
        """, E("a", "spec.portLevelMtls: must be an object (a map), not number 3")),
    row("jwks-not-json-and-private", "RequestAuthentication", """
        jwtRules:
        - issuer: a
          jwks: "{"  #@a
        - issuer: b
          jwks: '{"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}, {"kty": "oct", "k": "c2VjcmV0"}]}'  #@b
        """, W("b", "spec.jwtRules[1].jwks: jwks key at index 1 contains private key material; only public keys are "
                    "used for verification"),
        E("a", "spec.jwtRules[0].jwks: jwks parse error: Expecting property name enclosed in double quotes: line 1 "
               "column 2 (char 1)")),
    row("wasm-plugin-url-empty", "WasmPlugin", """
        url: ""  #@a
        """, E("a", "spec.url: url is required")),

    # --- metadata -----------------------------------------------------------------------------------------
    row("metadata-name-and-namespace", "DestinationRule", """
        host: r
        """, E("name", "metadata.name: invalid name 'Bad_Name': must be a lowercase RFC 1123 subdomain"),
        E("namespace", "metadata.namespace: invalid namespace 'Bad_NS'"), name="Bad_Name", namespace="Bad_NS"),
    row("kind-without-a-schema", "Node", """
        unschedulable: true
        """, namespace=""),
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
    assert [line for line in err.getvalue().splitlines() if line.startswith("Error: ") and " error(s) in " not in line
            ] == []  # the file itself was read (no YAML syntax error hiding every finding)
    assert sorted(shown) == sorted(expected)
    rejected = any(level == "Error" for level, *_ in r.expect)
    assert code == (1 if rejected else 0)
    assert (f"\u2714 Validated 1 resource(s) in {path}" in out.getvalue()) == (not rejected)


def test_serving_drops_an_unknown_field_with_a_warning_naming_it(tmp_path: Path):
    """`strict=False` (istiod serving, as the API server prunes): the field is dropped, the resource kept."""
    r = row("x", "VirtualService", """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          timeuot: 5s  #@a
        """)
    path = tmp_path / "vs.yaml"
    path.write_text(text := document(r), encoding="utf-8")
    result = load_paths([str(path)])
    assert [str(f) for f in result.findings] == [
        f"Warning [PYM0005] (VirtualService ns1/x {path}:{marks(text)['a']}) spec.http[0].timeuot: unknown field "
        "\"timeuot\" in HTTPRoute; did you mean timeout? (ignored)"]
    (vs,) = result.resources
    assert "timeuot" not in vs.spec["http"][0]


def test_a_null_spec_is_an_empty_one():
    cleaned, found = check_spec("DestinationRule", None)
    assert cleaned == {} and [(i.path, i.text) for i in found] == [("spec.host", "host is required")]


def test_every_field_type_in_the_schema_is_one_the_walker_knows():
    """A type string the walker does not know is a schema bug (KeyError), never a user's error: none exists."""
    for message, fields in S.MESSAGES.items():
        for field, typ in fields.items():
            t = typ.rstrip("!")
            while t.startswith(("[]", "map:")):
                t = t[2:] if t.startswith("[]") else t[4:]
            if t not in S.MESSAGES:
                _scalar(None, t)  # raises KeyError for an unknown type
    with pytest.raises(KeyError, match="int128"):  # naming the type the schema got wrong
        _scalar(1, "int128")


def test_a_second_rule_for_a_message_is_refused():
    with pytest.raises(ValueError, match="a rule for VirtualService is already registered"):
        rule("VirtualService")(lambda vs: iter(()))
    assert RULES["VirtualService"].__name__ == "_virtual_service"
