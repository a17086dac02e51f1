"""`meshctl ca init` and `meshctl token create`: thin commands over control/ca/store.py.

    meshctl ca init --out DIR [--trust-domain TD] [--key-type rsa-2048|ec-p256] [--also-trust ROOTS.pem] [--force]
        a root and an intermediate in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem,
        cert-chain.pem) plus root-key.pem; --also-trust appends other roots to root-cert.pem (root rotation)
    meshctl token create --namespace NS --service-account SA [--ttl 24h] [--ca-dir DIR] [-o FILE]
        a service-account token signed with the control plane's token key in DIR (its state directory;
        default $PYPROXY_CA_DIR), like `kubectl create token`; -o writes it with mode 0600

Keys are never printed. Bad input is one line on stderr and exit code 1.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TextIO

from control.ca.authority import format_ttl
from control.ca.store import CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, ROOT_KEY, CAStoreError, create_ca_set, token_signer
from control.ca.tokens import DEFAULT_AUDIENCE, DEFAULT_TOKEN_TTL
from control.istio.validate import parse_duration
from pyproxy.tls.files import write_file_atomic
from pyproxy.tls.identity import DEFAULT_TRUST_DOMAIN, IdentityError, PeerIdentity
from pyproxy.tls.pki import KeyType, load_certificates

CA_DIR_ENV = "PYPROXY_CA_DIR"


def duration_seconds(text: str) -> int:
    """An argparse type: a Go duration (`24h`, `30m`) -> whole seconds, at least 1."""
    try:
        seconds = parse_duration(text) // 1_000_000_000
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must be at least 1s")
    return seconds


def _key_type(text: str) -> KeyType:
    try:
        return KeyType.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    ca = subparsers.add_parser("ca", help="the mesh certificate authority (cacerts for a plugged-in CA)")
    ca_sub = ca.add_subparsers(dest="ca_command", metavar="COMMAND", parser_class=type(ca))
    ca_sub.required = True
    p = ca_sub.add_parser("init", help="create a root + intermediate in Istio's cacerts layout")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write (created, mode 0700)")
    p.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN, help="O= of the CA certificates")
    p.add_argument("--key-type", type=_key_type, default=KeyType.RSA_2048, metavar="TYPE",
                   help="rsa-2048 (default, as istiod), ec-p256 or ec-p384")
    p.add_argument("--also-trust", metavar="FILE",
                   help="root certificate(s) to keep trusting beside the new root (root rotation)")
    p.add_argument("--force", action="store_true", help="replace an existing set in DIR")
    p.set_defaults(func=cmd_ca_init)

    token = subparsers.add_parser("token", help="service-account tokens for sidecars (kubectl create token)")
    token_sub = token.add_subparsers(dest="token_command", metavar="COMMAND", parser_class=type(token))
    token_sub.required = True
    p = token_sub.add_parser("create", help="make a token for NAMESPACE/SERVICE-ACCOUNT")
    p.add_argument("-n", "--namespace", required=True)
    p.add_argument("--service-account", required=True, metavar="SA")
    p.add_argument("--ttl", type=duration_seconds, default=DEFAULT_TOKEN_TTL, metavar="DURATION",
                   help="lifetime, e.g. 24h (default), 30m")
    p.add_argument("--audience", default=DEFAULT_AUDIENCE, help=f"aud claim (default {DEFAULT_AUDIENCE})")
    p.add_argument("--ca-dir", default=os.environ.get(CA_DIR_ENV), metavar="DIR",
                   help=f"the control plane's state directory (default ${CA_DIR_ENV})")
    p.add_argument("-o", "--output", metavar="FILE", help="write the token here (mode 0600) instead of stdout")
    p.set_defaults(func=cmd_token_create)


def cmd_ca_init(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    also = []
    if args.also_trust:
        try:
            also = load_certificates(Path(args.also_trust).read_bytes(), args.also_trust)
        except (OSError, ValueError) as exc:
            print(f"Error: --also-trust {args.also_trust}: {getattr(exc, 'strerror', None) or exc}", file=err)
            return 1
    try:
        directory = create_ca_set(args.out, trust_domain=args.trust_domain, key_type=args.key_type,
                                  also_trust=also, force=args.force)
    except (CAStoreError, OSError) as exc:
        print(f"Error: {getattr(exc, 'strerror', None) or exc}", file=err)
        return 1
    print(f"Wrote {CA_CERT}, {CA_KEY} (0600), {CERT_CHAIN}, {ROOT_CERT} ({1 + len(also)} root(s)) and "
          f"{ROOT_KEY} (0600) to {directory}", file=out)
    print(f"Mount {directory} as the control plane's cacerts; move {ROOT_KEY} offline (it is not needed to run).",
          file=out)
    return 0


def cmd_token_create(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.ca_dir:
        print(f"Error: give --ca-dir DIR (the control plane's state directory) or set ${CA_DIR_ENV}", file=err)
        return 1
    try:
        PeerIdentity(DEFAULT_TRUST_DOMAIN, args.namespace, args.service_account)
        if ":" in args.namespace or ":" in args.service_account:
            raise IdentityError("namespace and service account may not contain ':'")
        token = token_signer(args.ca_dir).create(args.namespace, args.service_account, args.ttl, (args.audience,))
    except (IdentityError, CAStoreError, ValueError) as exc:
        print(f"Error: {exc}", file=err)
        return 1
    if args.output:
        try:
            write_file_atomic(args.output, token.encode("ascii") + b"\n", 0o600)
        except OSError as exc:
            print(f"Error: {args.output}: {exc.strerror}", file=err)
            return 1
        print(f"Wrote a token for system:serviceaccount:{args.namespace}:{args.service_account} "
              f"(expires in {format_ttl(args.ttl)}) to {args.output}", file=out)
    else:
        print(token, file=out)
    return 0
