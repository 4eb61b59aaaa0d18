"""`pkcs11-issuer keys list|generate|delete`: the keys on a token, by id and label."""

from __future__ import annotations

import argparse

from pkcs11_issuer.cli.connection import add_connection_arguments, connect, parse_uri_argument
from pkcs11_issuer.cli.errors import reports_errors
from pkcs11_issuer.hsm import KeyAlgorithm, KeySpec
from pkcs11_issuer.hsm.errors import ConfigurationError, KeyNotFoundError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser("keys", help="list, generate and delete keys on a token")
    commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list private keys with their pkcs11: URIs")
    add_connection_arguments(listing)
    listing.set_defaults(handler=reports_errors(_list))

    generate = commands.add_parser(
        "generate", help="generate a signing-only, non-extractable key pair"
    )
    add_connection_arguments(generate)
    generate.add_argument(
        "--key-uri",
        required=True,
        metavar="URI",
        help="pkcs11: URI with both id= and object= (the key's CKA_ID and CKA_LABEL)",
    )
    generate.add_argument(
        "--algorithm", choices=[a.value for a in KeyAlgorithm], default=KeyAlgorithm.ECDSA.value
    )
    generate.add_argument(
        "--size",
        type=int,
        default=None,
        help="RSA 2048/3072/4096 (default 2048); ECDSA 256/384 (default 256)",
    )
    generate.set_defaults(handler=reports_errors(_generate))

    delete = commands.add_parser("delete", help="destroy a key pair (irreversible)")
    add_connection_arguments(delete)
    delete.add_argument(
        "--key-uri", required=True, metavar="URI", help="pkcs11: URI with id= and/or object="
    )
    delete.add_argument(
        "--yes", action="store_true", help="confirm: the key cannot be recovered afterwards"
    )
    delete.set_defaults(handler=reports_errors(_delete))


def _list(args: argparse.Namespace) -> int:
    token = connect(args)
    keys = token.list_keys()
    for key in sorted(keys, key=lambda k: (k.label, k.id)):
        print(f"{key.spec!s:<10} {token.key_uri(key)}")
    if not keys:
        print(f"no private keys on token {token.info.label!r}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    uri = parse_uri_argument(args.key_uri, "--key-uri")
    if uri.id is None or uri.object is None:
        raise ConfigurationError("--key-uri must name both id= and object= for a new key")
    token = connect(args)
    key = token.generate_key(KeySpec.of(args.algorithm, args.size), id=uri.id, label=uri.object)
    print(token.key_uri(key))
    return 0


def _delete(args: argparse.Namespace) -> int:
    uri = parse_uri_argument(args.key_uri, "--key-uri")
    if not args.yes:
        raise ConfigurationError("deleting a key is irreversible: add --yes to confirm")
    token = connect(args)
    key = token.find_key(id=uri.id, label=uri.object)  # exactly one, or a clear error
    removed = token.delete_key(id=key.id, label=key.label)
    if not removed:
        raise KeyNotFoundError("the key disappeared before it could be deleted")
    print(f"deleted {token.key_uri(key)} ({removed} objects)")
    return 0
