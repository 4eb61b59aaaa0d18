"""Entry point: one argparse tree; each subcommand lives in its own module with `register()`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pkcs11_issuer import __version__
from pkcs11_issuer.cli import (
    createca_command,
    dev_command,
    hsm_command,
    keys_command,
    run_command,
    uri_command,
)

# Each module adds its subcommand and sets `handler` (args -> exit code) on its parser.
SUBCOMMANDS = (run_command, uri_command, hsm_command, keys_command, createca_command, dev_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pkcs11-issuer",
        description="cert-manager style issuance with private keys kept inside a PKCS#11 HSM",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
