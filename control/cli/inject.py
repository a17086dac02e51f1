"""`meshctl inject`: add sidecars to a docker-compose file (the compose form of `istioctl kube-inject`).

    meshctl inject -f app-compose.yml [-o out.yml] [--dry-run] [-n NAMESPACE] [--service-account SA]
                   [--image IMAGE] [--mesh-config DIR]

Reads the file, runs the pure transformation (control/inject.py), and prints the result (or writes it with -o;
`-o` naming the input file rewrites it in place). `--dry-run` prints a unified diff of what injection would
change and writes nothing. Comments of the input are not kept (the output is re-serialised YAML). Bad input is
one line on stderr naming the service and the field, exit 1.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import TextIO

import yaml

from control.inject import InjectError, InjectOptions, inject
from pyproxy.tls.files import write_file_atomic

MAX_INPUT_BYTES = 4 * 1024 * 1024  # a compose file is a few KiB; refuse to parse anything this big


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("inject", help="add sidecars to a docker-compose file (istioctl kube-inject)")
    p.add_argument("-f", "--filename", required=True, metavar="FILE", help="the compose file ('-' for stdin)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout (may be the input)")
    p.add_argument("--dry-run", action="store_true", help="print a unified diff of the changes; write nothing")
    defaults = InjectOptions()
    p.add_argument("-n", "--namespace", default=defaults.namespace,
                   help="namespace of services without a mesh.pyproxy.io/namespace label (default: default)")
    p.add_argument("--service-account", default=None, metavar="SA",
                   help="service account of services without a mesh.pyproxy.io/service-account label "
                        "(default: the service's name)")
    p.add_argument("--image", default=defaults.image, help=f"the sidecar/control-plane image ({defaults.image})")
    p.add_argument("--mesh-config", default=defaults.mesh_config, metavar="DIR",
                   help=f"Istio YAML for an added control plane, relative to the compose file ({defaults.mesh_config})")
    p.set_defaults(func=cmd_inject)


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read(MAX_INPUT_BYTES + 1)
    p = Path(path)
    if p.is_dir():
        raise InjectError(f"{path}: is a directory, not a compose file")
    if p.exists() and p.stat().st_size > MAX_INPUT_BYTES:
        raise InjectError(f"{path}: larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB: not a compose file")
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InjectError(f"{path}: not a text file (not UTF-8)") from None


def dump(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


def cmd_inject(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    options = InjectOptions(namespace=args.namespace, service_account=args.service_account, image=args.image,
                            mesh_config=args.mesh_config)
    try:
        text = _read(args.filename)
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise InjectError(f"{args.filename}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})")
        if doc is None:
            raise InjectError(f"{args.filename}: empty: nothing to inject")
        injected = inject(doc, options)
    except InjectError as exc:
        print(f"Error: {exc}", file=err)
        return 1
    except OSError as exc:
        print(f"Error: {args.filename}: {exc.strerror}", file=err)
        return 1
    result = dump(injected)
    if args.dry_run:
        before = dump(doc)
        diff = list(difflib.unified_diff(before.splitlines(keepends=True), result.splitlines(keepends=True),
                                         fromfile=args.filename, tofile=f"{args.filename} (injected)"))
        out.write("".join(diff) if diff else f"{args.filename}: already injected, nothing to change\n")
        return 0
    if not args.output:
        out.write(result)
        return 0
    try:
        write_file_atomic(args.output, result.encode(), 0o644)
    except OSError as exc:
        print(f"Error: {args.output}: {exc.strerror}", file=err)
        return 1
    added = [name for name in injected["services"] if name not in doc["services"]]
    print(f"Wrote {args.output}: {len(added)} service(s) added" + (f" ({', '.join(added)})" if added else "")
          + (f"; run it with: docker compose -f {args.output} up -d" if added else ""), file=err)
    return 0

