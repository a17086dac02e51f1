"""`meshctl render`: the Envoy v3 resources istiod would send one proxy, from Istio YAML files.

    meshctl render --config-dir DIR --workload NAME [--namespace NS] [-o json|yaml] [--inline-routes]
    meshctl render --config-dir DIR --gateway istio-ingressgateway [--namespace NS] [-o json|yaml]
    meshctl render ... --check-envoy     # and ask a real Envoy (`envoy --mode validate`) whether it accepts it

Output: `{"listeners": [...], "routes": [...], "clusters": [...], "endpoints": [...]}`, each resource an Envoy
v3 JSON object with its `@type` (what `istioctl proxy-config all -o json` shows, minus the dump envelope).
`--type clusters` prints one group only. Thin: loading is control.istio.load, the model control.mesh, the
translation control.translate. Input problems and what translation could not honour go to stderr; bad
input exits 1 with one line naming file, resource and field.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import TextIO

import yaml

from control.istio.load import load_paths
from control.istio.messages import Level
from control.mesh import build_mesh
from control.registry.files import RegistryError
from control.translate import Options, TranslateError, render_gateway, render_sidecar

EXIT_BAD_INPUT = 1


class _NoAliasDumper(yaml.SafeDumper):
    """Envoy config shares sub-objects (a VirtualService's routes in several virtual hosts); print them in
    full rather than as YAML anchors, which Envoy's YAML loader does not expect."""

    def ignore_aliases(self, data):
        return True


GROUPS = ("listeners", "routes", "clusters", "endpoints")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("render", help="print the Envoy v3 config istiod would send a workload or gateway")
    p.add_argument("--config-dir", required=True, metavar="DIR",
                   help="directory (or file) of Istio and Kubernetes YAML: the mesh's whole config")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--workload", metavar="NAME", help="Deployment, Pod or WorkloadEntry whose sidecar to render")
    who.add_argument("--gateway", metavar="NAME", help="gateway deployment to render, e.g. istio-ingressgateway")
    p.add_argument("-n", "--namespace", default=None, help="namespace of the workload (default: any)")
    p.add_argument("-o", "--output", choices=("json", "yaml"), default="json")
    p.add_argument("--type", choices=GROUPS, default=None, help="print only one resource group")
    p.add_argument("--inline-routes", action="store_true",
                   help="inline route configurations in the listeners instead of RDS references")
    p.add_argument("--check-envoy", action="store_true",
                   help="also run the output through `envoy --mode validate` (ENVOY_BIN, .venv-envoy/bin/envoy "
                        "or envoy on PATH) inside a sidecar-like bootstrap shell; exit 1 if Envoy refuses it")
    p.set_defaults(func=cmd_render)


def cmd_render(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not os.path.exists(args.config_dir):
        print(f"Error: {args.config_dir}: no such file or directory", file=err)
        return EXIT_BAD_INPUT
    result = load_paths([args.config_dir], strict=False)
    for f in result.findings:
        if f.level >= Level.WARNING:
            print(f, file=err)
    if result.fatal:
        return EXIT_BAD_INPUT
    options = Options(inline_routes=args.inline_routes)
    try:
        mesh = build_mesh(result.resources)
        if args.gateway:
            rendered = render_gateway(mesh, args.gateway, args.namespace, options)
        else:
            rendered = render_sidecar(mesh, args.workload, args.namespace, options)
    except (TranslateError, RegistryError) as exc:
        print(f"Error: {exc}", file=err)
        return EXIT_BAD_INPUT
    for note in rendered.notes:
        print(f"Warning: {note}", file=err)
    data = rendered.as_dict()
    if args.check_envoy and not _check_envoy(data, err):
        return EXIT_BAD_INPUT
    if args.type:
        data = {args.type: data[args.type]}
    if args.output == "yaml":
        print(yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False, default_flow_style=False), end="", file=out)
    else:
        print(json.dumps(data, indent=2), file=out)
    return 0


def _check_envoy(data: dict, err: TextIO) -> bool:
    """Validate with a real Envoy (control.envoy_check); one line on stderr saying what it decided."""
    from control.envoy_check import NO_ENVOY, check_rendered, find_envoy

    binary = find_envoy()
    if binary is None:
        print(f"Error: --check-envoy: {NO_ENVOY}", file=err)
        return False
    ok, why, shell = check_rendered(data, binary)
    left_out = f" (left out, istio-proxy only: {', '.join(shell.removed)})" if shell.removed else ""
    if ok:
        print(f"envoy --mode validate ({binary}): accepted{left_out}", file=err)
    else:
        print(f"Error: envoy --mode validate ({binary}) refused it: {why}", file=err)
    return ok
