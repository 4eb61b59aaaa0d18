"""`pkcs11-issuer hsm check`: does this module, token and PIN do everything the issuer needs?"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from pkcs11_issuer.cli.connection import add_connection_arguments, connect
from pkcs11_issuer.cli.errors import reports_errors
from pkcs11_issuer.hsm import MECHANISMS_NEEDED, KeyAlgorithm, KeySpec, Token, list_tokens
from pkcs11_issuer.hsm.errors import HsmError, UnsupportedError

CHECK_MESSAGE = b"pkcs11-issuer hsm check"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hsm = subparsers.add_parser("hsm", help="inspect and test an HSM")
    commands = hsm.add_subparsers(dest="hsm_command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="load the module, log in, and sign and verify with a throw-away key",
        description="Loads the module, lists its tokens, logs in, lists the mechanisms this "
        "project uses, generates a throw-away key, signs, verifies the signature with "
        "`cryptography` and deletes the key.",
    )
    add_connection_arguments(check)
    check.add_argument(
        "--key-algorithm",
        choices=[a.value for a in KeyAlgorithm],
        default=None,
        help="algorithm of the throw-away key (default: ECDSA, else RSA, as the token offers)",
    )
    check.set_defaults(handler=reports_errors(run_check))


def _verify(spec: KeySpec, public_key: object, signature: bytes) -> None:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, CHECK_MESSAGE, ec.ECDSA(hashes.SHA256()))
    elif isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, CHECK_MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    else:
        public_key.verify(signature, CHECK_MESSAGE)  # type: ignore[attr-defined]


def _pick_algorithm(requested: str | None, available: set[object]) -> KeySpec:
    if requested is not None:
        return KeySpec.of(requested)
    for algorithm in (KeyAlgorithm.ECDSA, KeyAlgorithm.RSA):
        if set(MECHANISMS_NEEDED[algorithm]) <= available:
            return KeySpec.of(algorithm)
    raise UnsupportedError("the token offers neither ECDSA nor RSA key generation and signing")


def run_check(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    token = connect(args)
    module = token.module
    out(f"module     {module.path}")
    version = ".".join(map(str, module.version))
    out(f"           {module.manufacturer} / {module.description} {version}")
    locking = "the module locks for itself" if module.thread_safe else "serialised by us"
    out(f"           concurrent calls: {locking}")
    for info in list_tokens(module):
        mark = "*" if info.slot_id == token.info.slot_id else " "
        out(f"slot {info.slot_id:<11}{mark} token {info.label!r} serial {info.serial}")
    out(
        f"token      {token.info.label!r} ({token.info.manufacturer} {token.info.model}), "
        f"serial {token.info.serial}"
    )
    keys = token.list_keys()  # the first session logs in
    out(f"login      ok ({len(keys)} private key(s) visible)")
    available = token.mechanisms()
    for algorithm, mechanisms in MECHANISMS_NEEDED.items():
        present = [m.name for m in mechanisms if m in available]
        missing = [m.name for m in mechanisms if m not in available]
        status = "ok" if not missing else f"missing {', '.join(missing)}"
        out(f"mechanisms {algorithm.value:<8}{status} ({', '.join(present) or 'none'} present)")
    spec = _pick_algorithm(args.key_algorithm, set(available))
    _sign_and_verify(token, spec, out)
    return 0


def _sign_and_verify(token: Token, spec: KeySpec, out: Callable[[str], None]) -> None:
    suffix = secrets.token_hex(8)
    key_id, label = f"hsm-check-{suffix}".encode(), f"pkcs11-issuer hsm check {suffix}"
    key = token.generate_key(spec, id=key_id, label=label)
    try:
        out(f"generate   {spec} key ok (id {key_id.hex()})")
        hash_name = None if spec.algorithm is KeyAlgorithm.ED25519 else "sha256"
        signature = token.sign(key, CHECK_MESSAGE, hash_name=hash_name)
        try:
            _verify(spec, key.public_key, signature)
        except InvalidSignature:
            raise HsmError(
                "the token's signature does not verify with its own public key"
            ) from None
        out(f"sign       ok, {len(signature)}-byte signature verified with cryptography")
    finally:
        token.delete_key(id=key_id, label=label)
    out("delete     throw-away key deleted")
    out("result     OK")
