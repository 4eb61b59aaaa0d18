"""How the HSM commands reach a token: the same four options everywhere.

`--module` takes a name from the operator configuration's allowlist (`--config`), or an
explicit path: an administrator checking a module by hand may point at any file, which is
why this is a command-line-only privilege and never something a custom resource can do.
"""

from __future__ import annotations

import argparse
import os

from pkcs11_issuer.config import ConfigError, OperatorConfig
from pkcs11_issuer.hsm import ModuleAllowlist, Pin, Token, TokenSelector
from pkcs11_issuer.hsm.errors import ConfigurationError
from pkcs11_issuer.uri import Pkcs11Uri, UriError, parse

DEFAULT_CONFIG = os.environ.get("PKCS11_ISSUER_CONFIG", "/etc/pkcs11-issuer/config.yaml")


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("HSM connection")
    group.add_argument(
        "--module",
        required=True,
        metavar="NAME|PATH",
        help="a module name from --config's allowlist, or the path of a PKCS#11 library",
    )
    group.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"operator configuration that allowlists modules (default {DEFAULT_CONFIG})",
    )
    group.add_argument(
        "--token-uri",
        required=True,
        metavar="URI",
        help="pkcs11: URI selecting the token (token=, serial=, slot-id=, ...)",
    )
    group.add_argument("--pin-file", metavar="FILE", help="file holding the user PIN")
    group.add_argument("--max-sessions", type=int, default=4, metavar="N", help=argparse.SUPPRESS)


def parse_uri_argument(text: str, option: str) -> Pkcs11Uri:
    try:
        uri = parse(text)
    except UriError as error:
        raise ConfigurationError(f"{option}: {error}") from error
    if uri.pin_value is not None:
        raise ConfigurationError(
            f"{option}: pin-value is not accepted here; put the PIN in a file and pass --pin-file"
        )
    return uri


def module_allowlist(args: argparse.Namespace) -> tuple[ModuleAllowlist, str]:
    """The allowlist to load from and the name to load."""
    module: str = args.module
    if "/" in module:
        return ModuleAllowlist({"command-line": os.path.abspath(module)}), "command-line"
    try:
        config = OperatorConfig.load(args.config)
    except ConfigError as error:
        raise ConfigurationError(
            f"module {module!r} is a name, so it is looked up in the configuration: {error}"
        ) from error
    return ModuleAllowlist(config.modules), module


def read_pin(args: argparse.Namespace) -> Pin | None:
    if args.pin_file is None:
        return None
    try:
        return Pin.from_file(args.pin_file)
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"--pin-file {args.pin_file}: {error}") from error


def connect(args: argparse.Namespace) -> Token:
    """The token the connection options name, logged in on first use."""
    allowlist, name = module_allowlist(args)
    uri = parse_uri_argument(args.token_uri, "--token-uri")
    return Token(
        allowlist.load(name),
        TokenSelector.from_uri(uri),
        read_pin(args),
        max_sessions=args.max_sessions,
        login_retry_interval=0.0,
    )
