"""`pkcs11-issuer uri parse URI`: validate a pkcs11: URI and show what it says.

Other tools drive this command, so its output is a contract: one JSON object on stdout,
`{"path": [[name, hex], ...], "query": [[name, hex], ...], "uri": CANONICAL}`, attributes in
order of appearance and values as lowercase hex of their percent-decoded bytes; exit 0. An
invalid URI prints nothing on stdout and one line starting `error:` on stderr; exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys

from pkcs11_issuer.uri import UriError, parse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    uri = subparsers.add_parser("uri", help="work with RFC 7512 pkcs11: URIs")
    commands = uri.add_subparsers(dest="uri_command", required=True, metavar="COMMAND")
    parse_command = commands.add_parser(
        "parse",
        help="validate a URI; print its attributes (hex values) and canonical form as JSON",
        description=(
            "Validate URI strictly against RFC 7512 and print a JSON object with its path and "
            "query attributes (values as hex of the decoded bytes) and its canonical form. "
            "Errors give the 0-based position of the offending character."
        ),
    )
    parse_command.add_argument("uri", metavar="URI", help="the pkcs11: URI, quoted for the shell")
    parse_command.set_defaults(handler=_parse)


def _parse(args: argparse.Namespace) -> int:
    try:
        uri = parse(args.uri)
    except UriError as exc:
        print(f"error: invalid PKCS#11 URI: {exc}", file=sys.stderr)
        return 1
    document = {
        "path": [[name, value.hex()] for name, value in uri.path],
        "query": [[name, value.hex()] for name, value in uri.query],
        "uri": uri.format(),
    }
    print(json.dumps(document))
    return 0
