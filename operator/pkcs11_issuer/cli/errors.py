"""One contract for every command: a failure is one line on stderr, `error: ...`, exit 1."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from pkcs11_issuer.config import ConfigError
from pkcs11_issuer.hsm.errors import HsmError
from pkcs11_issuer.uri import UriError

Handler = Callable[[argparse.Namespace], int]
EXPECTED_ERRORS = (HsmError, ConfigError, UriError, OSError, ValueError)


def reports_errors(handler: Handler) -> Handler:
    @functools.wraps(handler)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except EXPECTED_ERRORS as error:
            message = " ".join(str(error).split())  # one line, whatever the error held
            print(f"error: {message}", file=sys.stderr)
            return 1

    return wrapper
