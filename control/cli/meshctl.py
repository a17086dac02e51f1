"""`meshctl`: the operator's command line (like `istioctl`), thin over control.istio and control.analyze.

    meshctl analyze PATH...   Istio's analyzers over YAML files/directories/stdin ('-'); istioctl's output
                              (`Error [IST0101] (VirtualService default/reviews file.yaml:12) ...`),
                              --output-threshold (default Info), --failure-threshold (default Error),
                              -o log|json|yaml, --suppress CODE=RESOURCE; exit 79 when findings reach the
                              failure threshold
    meshctl validate -f PATH  schema validation only (istioctl validate -f): exit 1 on any error
    meshctl render ...        the Envoy v3 config of one workload or gateway (control.cli.render)
    meshctl proxy-status      sync status of every connected proxy; proxy-config: what a proxy runs
                              (control.cli.proxy)
    meshctl ca init           a root + intermediate in Istio's cacerts layout; token create: a sidecar's
                              service-account token (control.ca.cli)
    meshctl inject -f FILE    sidecars into a docker-compose file, as istioctl kube-inject (control.cli.inject)
    meshctl stat deploy|pod|svc  success rate, RPS, p50/p95/p99 latency, mTLS share from the sidecars' metrics
                              (linkerd viz stat; control.cli.stat)
    meshctl tap NAME          the requests passing a sidecar, live (linkerd viz tap; control.cli.tap)

Bad input never prints a traceback: a missing file or a YAML syntax error is one line naming file:line,
with exit code 1.
"""
from __future__ import annotations

import argparse
from datetime import datetime, timezone
import fnmatch
import json
import os
import sys
from typing import Any, Sequence, TextIO

import yaml

from control.analyze import analyze, sort_findings
from control.ca import cli as ca_cli
from control.cli import authz, inject, proxy, render, stat, tap
from control.istio import messages as msg
from control.istio.load import VALIDATED_ONLY, LoadResult, load_paths
from control.istio.messages import Finding, Level
from pyproxy import __version__

EXIT_ISSUES_FOUND = 79  # istioctl's exit code when analysis finds issues at/above --failure-threshold
EXIT_USAGE = 64  # sysexits EX_USAGE, as istioctl
EXIT_BAD_INPUT = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2; istioctl uses 64 for usage errors
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _level(text: str) -> Level:
    try:
        return Level.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="meshctl", description="Operate a pyproxy mesh (an istioctl look-alike).")
    parser.add_argument("--version", action="version", version=f"meshctl (pyproxy mesh) {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True

    p = subparsers.add_parser(
        "analyze", help="analyze Istio configuration files (istioctl analyze)",
        description="Analyze Istio configuration files as `istioctl analyze` does without a cluster: Istio's "
                    "default ingress gateway (Service istio-system/istio-ingressgateway and a Pod labelled "
                    "istio=ingressgateway) is assumed present unless --no-default-ingress-gateway is given, and "
                    "resources with schema errors are reported (IST0106) and still analyzed.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="YAML/JSON files, directories (recursive) or '-'")
    p.add_argument("--output-threshold", type=_level, default=Level.INFO, metavar="LEVEL",
                   help="lowest level printed: Info, Warning or Error (default Info)")
    p.add_argument("--failure-threshold", type=_level, default=Level.ERROR, metavar="LEVEL",
                   help="lowest level that makes the exit code 79: Info, Warning or Error (default Error)")
    p.add_argument("-o", "--output", choices=("log", "json", "yaml"), default="log")
    p.add_argument("-S", "--suppress", action="append", default=[], metavar="CODE=RESOURCE",
                   help='suppress findings, e.g. "IST0102=Namespace frod" (RESOURCE may use * wildcards)')
    p.add_argument("--no-default-ingress-gateway", dest="default_ingress", action="store_false",
                   help="do not assume Istio's default ingress gateway (istio-system/istio-ingressgateway, "
                        "labels istio=ingressgateway), which istioctl analyze adds when it has no cluster")
    p.set_defaults(func=cmd_analyze)

    p = subparsers.add_parser("validate", help="validate Istio resources against the schema (istioctl validate)")
    p.add_argument("-f", "--filename", dest="paths", action="append", required=True, metavar="PATH",
                   help="file, directory (recursive) or '-' (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    p.set_defaults(func=cmd_validate)

    # `render` lives in its own module: `render.register(subparsers)` adds a subparser whose
    # `func(args, out, err) -> int` is called with the parsed arguments and the streams, like cmd_analyze.
    render.register(subparsers)
    proxy.register(subparsers)  # proxy-status, proxy-config: the live mesh (control.cli.proxy)
    authz.register(subparsers)  # authz check: the policies a proxy enforces (control.cli.authz)
    ca_cli.register(subparsers)  # ca init, token create: workload identity (control.ca.cli)
    inject.register(subparsers)  # inject: sidecars into a docker-compose file (control.cli.inject)
    stat.register(subparsers)  # stat: success rate, RPS, latency per workload/pod/service (control.cli.stat)
    tap.register(subparsers)  # tap: live requests through one sidecar (control.cli.tap)
    return parser


def _fatal(result: LoadResult, err: TextIO) -> bool:
    """Print unreadable-input problems (missing file, YAML syntax) as one line each."""
    for f in result.fatal:
        text = f.message if f.message.startswith(f.file) else f"{f.location}: {f.message}"
        print(f"Error: {text}", file=err)
    return bool(result.fatal)


def _suppressed(f: Finding, rules: Sequence[str]) -> bool:
    for rule in rules:
        code, _, pattern = rule.partition("=")
        if code.strip() == f.code and fnmatch.fnmatchcase(f.resource, pattern.strip() or "*"):
            return True
    return False


def _validated_only(result: LoadResult) -> int:
    """Resources of kinds validated but not served (EnvoyFilter, WasmPlugin, ...): validated, then left out."""
    kinds = {kind for _, kind in VALIDATED_ONLY}
    return sum(1 for f in result.findings if f.code == msg.IGNORED_KIND.code and f.resource.split(" ")[0] in kinds)


def _nothing_found(result: Any, paths: Sequence[str], err: TextIO) -> bool:
    """No resource in any input and no error to explain why: say so, as istioctl fails on empty input."""
    if result.resources or _validated_only(result) or any(f.level >= Level.ERROR for f in result.findings):
        return False
    print(f"Error: no Istio or Kubernetes resources found in {', '.join(paths)}", file=err)
    return True


def cmd_analyze(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    result = load_paths(args.paths, strict=True, keep_invalid=True)
    if _fatal(result, err) or _nothing_found(result, args.paths, err):
        return EXIT_BAD_INPUT
    findings = sort_findings(list(result.findings) + list(analyze(
        result.resources, default_ingress=args.default_ingress, now=datetime.now(timezone.utc))))
    findings = [f for f in findings if not _suppressed(f, args.suppress)]
    shown = [f for f in findings if f.level >= args.output_threshold]
    if args.output == "json":
        print(json.dumps([f.as_dict() for f in shown], indent=2), file=out)
    elif args.output == "yaml":
        print(yaml.safe_dump([f.as_dict() for f in shown], sort_keys=False), end="", file=out)
    elif shown:
        for f in shown:
            print(f, file=out)
    else:
        print(f"\u2714 No validation issues found when analyzing {', '.join(args.paths)}.", file=err)
    return EXIT_ISSUES_FOUND if any(f.level >= args.failure_threshold for f in findings) else 0


def cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    result = load_paths(args.paths, strict=True)
    if _fatal(result, err) or _nothing_found(result, args.paths, err):
        return EXIT_BAD_INPUT
    errors = [f for f in result.findings if f.level >= Level.ERROR]
    for f in result.findings:
        if f.level >= Level.WARNING or not args.quiet:
            print(f, file=err if f.level >= Level.ERROR else out)
    if errors:
        print(f"Error: {len(errors)} error(s) in {', '.join(args.paths)}", file=err)
        return EXIT_BAD_INPUT
    if not args.quiet:
        count = len(result.resources) + _validated_only(result)
        print(f"\u2714 Validated {count} resource(s) in {', '.join(args.paths)}", file=out)
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return args.func(args, out, err)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug of ours: still one line, unless asked for the traceback
        if os.environ.get("MESHCTL_DEBUG"):
            raise
        print(f"Error: internal error: {type(exc).__name__}: {exc} (set MESHCTL_DEBUG=1 for a traceback)",
              file=err)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
