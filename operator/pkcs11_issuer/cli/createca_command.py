"""`pkcs11-issuer createca`: a root or intermediate CA certificate for a key inside the HSM.

Modelled on Fulcio's `createca`: the key is named by a `pkcs11:` URI (an existing key, or with
`--generate` one created under exactly that id and label); a root is self-signed, an
intermediate is signed by its parent's HSM key; the certificate goes to a PEM file, to the
token as a certificate object next to the key, or both. Every check that can fail runs before
a key is generated, so a refused request leaves nothing behind.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path
from typing import TextIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pkcs11_issuer.cli.connection import add_connection_arguments, connect, parse_uri_argument
from pkcs11_issuer.cli.errors import reports_errors
from pkcs11_issuer.hsm import KeyAlgorithm, KeyRef, KeySpec, Token
from pkcs11_issuer.hsm.errors import ConfigurationError, HsmError, UnsupportedError
from pkcs11_issuer.uri import Pkcs11Uri
from pkcs11_issuer.x509 import (
    CertificateProfile,
    Issuer,
    SignatureScheme,
    Subject,
    build_csr,
    format_duration,
    hsm_private_key,
    parse_duration,
    self_sign,
)

DEFAULT_VALIDITY = "87600h"  # ten years, as Fulcio's root
CA_USAGES = ("cert sign", "crl sign")
# A CA key is long-lived: P-384, as Fulcio's public root uses, unless told otherwise.
DEFAULT_EC_SIZE = 384


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "createca",
        help="create a root or intermediate CA certificate for a key in the HSM",
        description=(
            "Create a CA certificate signed inside the HSM: a self-signed root, or with "
            "--parent-key-uri and --parent-cert an intermediate signed by another HSM key. "
            "Write it to a PEM file (--out), to the token next to its key (--store-in-token), "
            "or both."
        ),
    )
    add_connection_arguments(parser)

    key = parser.add_argument_group("CA key")
    key.add_argument(
        "--key-uri",
        required=True,
        metavar="URI",
        help="pkcs11: URI of the CA key by id= and/or object= (both when --generate)",
    )
    key.add_argument(
        "--generate",
        action="store_true",
        help="generate the key under exactly the id and object (label) of --key-uri",
    )
    key.add_argument(
        "--key-algorithm",
        choices=[a.value for a in KeyAlgorithm],
        help="with --generate: key algorithm (default ECDSA)",
    )
    key.add_argument(
        "--key-size",
        type=int,
        metavar="BITS",
        help="with --generate: RSA 2048/3072/4096 (default 2048), ECDSA 256/384 (default 384)",
    )

    subject = parser.add_argument_group("subject (repeat a list option for several values)")
    subject.add_argument("--common-name", metavar="CN")
    for option, what in (
        ("--org", "organization (O)"),
        ("--org-unit", "organizational unit (OU)"),
        ("--country", "two-letter country code (C)"),
        ("--province", "state or province (ST)"),
        ("--locality", "locality (L)"),
        ("--street-address", "street address"),
        ("--postal-code", "postal code"),
    ):
        subject.add_argument(option, action="append", default=[], metavar="TEXT", help=what)

    certificate = parser.add_argument_group("certificate")
    certificate.add_argument(
        "--validity",
        default=DEFAULT_VALIDITY,
        metavar="DURATION",
        help=f"lifetime as a Go duration (87600h, 2160h30m) or in days (3650d); "
        f"default {DEFAULT_VALIDITY}. An intermediate never outlives its parent: the end is "
        "clamped to the parent's",
    )
    certificate.add_argument(
        "--path-len",
        type=_path_length,
        default=argparse.SUPPRESS,
        metavar="N|none",
        help="how many CAs may follow below this one; default 1 for a root, 0 for an "
        "intermediate; `none` for no limit",
    )
    certificate.add_argument(
        "--signature-hash",
        choices=("sha256", "sha384", "sha512"),
        help="hash the signer signs with (default: chosen by the signing key's type)",
    )
    certificate.add_argument(
        "--rsa-pss", action="store_true", help="sign with RSASSA-PSS (RSA signing keys only)"
    )

    parent = parser.add_argument_group("intermediate CA")
    parent.add_argument(
        "--parent-key-uri", metavar="URI", help="pkcs11: URI of the parent CA's key (same token)"
    )
    parent.add_argument(
        "--parent-cert", metavar="FILE", help="the parent CA's certificate (PEM or DER)"
    )

    output = parser.add_argument_group("output (at least one)")
    output.add_argument(
        "--out", metavar="FILE", help="write the certificate as PEM to FILE (`-` for stdout)"
    )
    output.add_argument(
        "--store-in-token",
        action="store_true",
        help="store the certificate on the token with the key's id and label",
    )
    parser.set_defaults(handler=reports_errors(run))


def _path_length(text: str) -> int | None:
    if text == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a number of CAs (0, 1, ...) or `none`") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a path length cannot be negative")
    return value


def _key_uri(text: str, option: str) -> Pkcs11Uri:
    uri = parse_uri_argument(text, option)
    if uri.id is None and uri.object is None:
        raise ConfigurationError(f"{option} must name the key by id= and/or object=")
    if uri.type not in (None, "private"):
        raise ConfigurationError(f"{option} names a {uri.type!r} object; a CA key is private")
    if uri.module_name is not None or uri.module_path is not None:
        raise ConfigurationError(f"{option}: the module is chosen with --module, not in the URI")
    return uri


def _check_same_token(uri: Pkcs11Uri, token: Token, option: str) -> None:
    info = token.info
    named = (
        (uri.token, info.label),
        (uri.serial, info.serial),
        (uri.manufacturer, info.manufacturer),
        (uri.model, info.model),
    )
    if any(want is not None and want.strip() != have for want, have in named) or (
        uri.slot_id is not None and uri.slot_id != info.slot_id
    ):
        raise ConfigurationError(
            f"{option} names another token than --token-uri selects ({info.label!r}, serial "
            f"{info.serial}); the keys are used on the --token-uri token"
        )


def _load_certificate(path: str) -> x509.Certificate:
    data = Path(path).read_bytes()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)[0]  # the parent; a chain may follow
        return x509.load_der_x509_certificate(data)
    except ValueError as error:
        raise ConfigurationError(f"--parent-cert {path}: not a certificate ({error})") from error


def _profile(args: argparse.Namespace, *, intermediate: bool) -> CertificateProfile:
    path_length = args.path_len if "path_len" in args else (0 if intermediate else 1)
    return CertificateProfile(
        subject=Subject(
            common_name=args.common_name,
            organizations=tuple(args.org),
            countries=tuple(args.country),
            organizational_units=tuple(args.org_unit),
            localities=tuple(args.locality),
            provinces=tuple(args.province),
            street_addresses=tuple(args.street_address),
            postal_codes=tuple(args.postal_code),
        ),
        duration=parse_duration(args.validity),
        usages=CA_USAGES,
        is_ca=True,
        max_path_length=path_length,
    )


def _check_arguments(args: argparse.Namespace) -> None:
    if not args.generate and (args.key_algorithm is not None or args.key_size is not None):
        raise ConfigurationError("--key-algorithm and --key-size only apply with --generate")
    if (args.parent_key_uri is None) != (args.parent_cert is None):
        raise ConfigurationError(
            "an intermediate needs both --parent-key-uri and --parent-cert; a root needs neither"
        )
    if args.out is None and not args.store_in_token:
        raise ConfigurationError("say where the certificate goes: --out FILE, --store-in-token")
    if args.out not in (None, "-"):
        directory = os.path.dirname(os.path.abspath(args.out))
        if not os.access(directory, os.W_OK):
            raise ConfigurationError(f"--out {args.out}: cannot write in {directory}")


def _refuse_existing_certificates(token: Token, key_id: bytes, label: str) -> None:
    # As Fulcio does: a second certificate object under the key's id would make "the CA
    # certificate of this key" ambiguous for everything that reads the token.
    if token.find_certificates(id=key_id) or token.find_certificates(label=label):
        raise ConfigurationError(
            f"the token already holds a certificate with id {key_id.hex()} or label {label!r}; "
            "delete it first, or write the new certificate with --out only"
        )


def _check_scheme(scheme: SignatureScheme, algorithm: KeyAlgorithm) -> None:
    """The root's own key signs it: refuse a scheme it cannot follow before generating it."""
    if scheme.rsa_pss and algorithm is not KeyAlgorithm.RSA:
        raise ConfigurationError(f"--rsa-pss needs an RSA signing key, not {algorithm.value}")
    if scheme.hash is not None and algorithm is KeyAlgorithm.ED25519:
        raise ConfigurationError("--signature-hash does not apply to Ed25519, which signs whole")


def run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    key_uri = _key_uri(args.key_uri, "--key-uri")
    if args.generate and (key_uri.id is None or key_uri.object is None):
        raise ConfigurationError("with --generate, --key-uri must name both id= and object=")
    parent_uri = _key_uri(args.parent_key_uri, "--parent-key-uri") if args.parent_key_uri else None
    parent_cert = _load_certificate(args.parent_cert) if args.parent_cert else None
    profile = _profile(args, intermediate=parent_uri is not None)
    scheme = SignatureScheme(hash=args.signature_hash, rsa_pss=args.rsa_pss)
    spec = None
    if args.generate:
        algorithm = args.key_algorithm or KeyAlgorithm.ECDSA.value
        size = args.key_size
        if size is None and algorithm == KeyAlgorithm.ECDSA.value:
            size = DEFAULT_EC_SIZE
        spec = KeySpec.of(algorithm, size)
        if parent_uri is None:
            _check_scheme(scheme, spec.algorithm)

    token = connect(args)
    _check_same_token(key_uri, token, "--key-uri")
    issuer = None
    if parent_uri is not None and parent_cert is not None:
        _check_same_token(parent_uri, token, "--parent-key-uri")
        parent_key = token.find_key(id=parent_uri.id, label=parent_uri.object)
        issuer = Issuer(parent_cert, hsm_private_key(token, parent_key), scheme)
        issuer.check(profile)

    if spec is not None:
        assert key_uri.id is not None and key_uri.object is not None
        if args.store_in_token:
            _refuse_existing_certificates(token, key_uri.id, key_uri.object)
        key = token.generate_key(spec, id=key_uri.id, label=key_uri.object)
    else:
        key = token.find_key(id=key_uri.id, label=key_uri.object)
        if args.store_in_token:
            _refuse_existing_certificates(token, key.id, key.label)

    try:
        certificate = _sign(token, key, profile, scheme, issuer)
        _write(args.out, certificate)
    except (HsmError, ValueError, OSError) as error:
        if spec is None:
            raise
        raise ConfigurationError(f"{error}{_kept(token, key, generated=True)}") from error
    if args.store_in_token:
        _store(args, token, key, certificate, generated=spec is not None)
    _report(args, token, key, certificate, profile)
    return 0


def _kept(token: Token, key: KeyRef, *, generated: bool) -> str:
    if not generated:
        return ""
    return (
        f" (the key {token.key_uri(key)} was generated and stays on the token: run again "
        "without --generate to use it)"
    )


def _sign(
    token: Token,
    key: KeyRef,
    profile: CertificateProfile,
    scheme: SignatureScheme,
    issuer: Issuer | None,
) -> x509.Certificate:
    private_key = hsm_private_key(token, key)
    if issuer is None:
        return self_sign(profile, private_key, scheme)
    # The new CA's own key signs the request as it would sign anything: by its key type.
    return issuer.issue(build_csr(profile, private_key), profile)


def _write(out: str | None, cert: x509.Certificate) -> None:
    pem = cert.public_bytes(serialization.Encoding.PEM)
    if out == "-":
        sys.stdout.write(pem.decode())
    elif out is not None:
        Path(out).write_bytes(pem)


def _store(
    args: argparse.Namespace,
    token: Token,
    key: KeyRef,
    cert: x509.Certificate,
    *,
    generated: bool,
) -> None:
    try:
        token.store_certificate(
            cert.public_bytes(serialization.Encoding.DER),
            id=key.id,
            label=key.label,
            subject=cert.subject.public_bytes(),
        )
    except (UnsupportedError, ConfigurationError) as error:
        refused = (
            f"token {token.info.label!r} cannot store certificate objects "
            f"({error.ckr or error}), as older AWS CloudHSM clusters cannot"
        )
        if args.out not in (None, "-"):
            raise ConfigurationError(
                f"{refused}; the certificate was written to {args.out}: keep it outside the "
                "token (a file or a Secret), as Fulcio does"
            ) from error
        raise ConfigurationError(
            f"{refused}; write the certificate to a file with --out FILE instead"
            + _kept(token, key, generated=generated)
        ) from error


def _report(
    args: argparse.Namespace,
    token: Token,
    key: KeyRef,
    cert: x509.Certificate,
    profile: CertificateProfile,
) -> None:
    stream: TextIO = sys.stderr if args.out == "-" else sys.stdout
    kind = "intermediate" if args.parent_key_uri else "root"
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    lines = [
        f"created {kind} CA {cert.subject.rfc4514_string()}",
        f"  serial   {cert.serial_number:x}",
        f"  valid    {start:%Y-%m-%d %H:%M:%S}Z to {end:%Y-%m-%d %H:%M:%S}Z",
        f"  key      {token.key_uri(key)}",
    ]
    if end - start < profile.duration - datetime.timedelta(seconds=1):
        lines.append(
            f"  note     validity clamped to the parent's end ({format_duration(end - start)} "
            f"instead of {format_duration(profile.duration)})"
        )
    if args.out not in (None, "-"):
        lines.append(f"  written  {args.out}")
    if args.store_in_token:
        lines.append(f"  stored   on token {token.info.label!r} (id {key.id.hex()})")
    print("\n".join(lines), file=stream)
