"""Issuer and ClusterIssuer: is the issuer able to sign, and with what.

`selfSigned` needs nothing up front. `ca` needs its key in the HSM (found, allowed by the
policy) and its certificate (from a Secret, or from the token next to the key), and the two
must belong together; each way this can fail has its own reason so that the user knows what
to fix."""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509 as cx509

from pkcs11_issuer import x509
from pkcs11_issuer.controller import policy
from pkcs11_issuer.controller.problems import Problem, as_problem
from pkcs11_issuer.controller.secrets import KEY_URI_FIELD
from pkcs11_issuer.controller.services import Services
from pkcs11_issuer.controller.spec import CaSettings, IssuerSpec, parse_issuer_spec

# (kind, namespace or None for a ClusterIssuer, name)
IssuerKey = tuple[str, str | None, str]


@dataclass(frozen=True)
class IssuerState:
    key: IssuerKey
    uid: str
    problem: Problem | None = None
    message: str = ""
    spec: IssuerSpec | None = None
    signer: x509.Issuer | None = None  # None for selfSigned
    chain: tuple[cx509.Certificate, ...] = ()  # the CA certificate, then what it chains to
    ca: cx509.Certificate | None = None  # what goes into ca.crt
    token: str | None = None  # the token of the CA key

    @property
    def ready(self) -> bool:
        return self.problem is None


def issuer_key(body: Mapping[str, Any]) -> IssuerKey:
    metadata = body["metadata"]
    return (body["kind"], metadata.get("namespace"), metadata["name"])


def _certificates(secret: Mapping[str, Any], field: str) -> list[cx509.Certificate]:
    encoded = (secret.get("data") or {}).get(field)
    if not encoded:
        return []
    try:
        return cx509.load_pem_x509_certificates(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError) as error:
        name = secret["metadata"]["name"]
        raise Problem(
            "InvalidCACertificate", f"Secret {name}: {field} is not a PEM certificate chain"
        ) from error


def _secret_text(secret: Mapping[str, Any], field: str) -> str | None:
    encoded = (secret.get("data") or {}).get(field)
    try:
        return base64.b64decode(encoded, validate=True).decode() if encoded else None
    except (binascii.Error, UnicodeDecodeError):
        return None


def _check_pair(
    certificate: cx509.Certificate, key: x509.HsmPrivateKey, now: datetime.datetime
) -> None:
    subject = certificate.subject.rfc4514_string()
    try:
        is_ca = certificate.extensions.get_extension_for_class(cx509.BasicConstraints).value.ca
    except cx509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise Problem(
            "NotACA",
            f"the certificate {subject!r} is not a CA certificate (basicConstraints CA:TRUE)",
        )
    if x509.subject_public_key_info(certificate.public_key()) != x509.subject_public_key_info(
        key.public_key()
    ):
        raise Problem(
            "CertificateKeyMismatch",
            f"the CA certificate {subject!r} is not for the CA key in the HSM; pair the "
            "certificate with its own key",
        )
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if not start <= now < end:
        raise Problem(
            "CertificateNotValid",
            f"the CA certificate {subject!r} is valid from {start:%Y-%m-%d %H:%M}Z to "
            f"{end:%Y-%m-%d %H:%M}Z, not now; renew it",
        )


@dataclass(frozen=True)
class _CaMaterial:
    chain: tuple[cx509.Certificate, ...]
    ca: cx509.Certificate | None
    key_uri: str


async def _ca_material(
    services: Services, settings: CaSettings, namespace: str | None
) -> _CaMaterial:
    """The CA chain and key URI named by the Secret and/or the spec."""
    if settings.secret_name is None:
        if settings.pkcs11 is None:
            raise Problem("InvalidSpec", "spec.ca needs pkcs11, secretName or both")
        return _CaMaterial((), None, settings.pkcs11)
    secret_namespace = namespace or services.config.cluster_resource_namespace
    where = f"Secret {secret_namespace}/{settings.secret_name}"
    secret = await services.read_secret(secret_namespace, settings.secret_name)
    if secret is None:
        raise Problem(
            "SecretNotFound",
            f"{where} does not exist; it must hold the CA certificate in tls.crt",
            transient=True,
        )
    chain = _certificates(secret, "tls.crt")
    if not chain:
        raise Problem("InvalidCACertificate", f"{where} has no certificate in tls.crt")
    roots = _certificates(secret, "ca.crt")
    key_uri = settings.pkcs11 or _secret_text(secret, KEY_URI_FIELD)
    if key_uri is None:
        raise Problem(
            "InvalidSpec",
            f"spec.ca.pkcs11 is not set and {where} has no {KEY_URI_FIELD}: name the CA key",
        )
    return _CaMaterial(tuple(chain), roots[0] if roots else chain[-1], key_uri)


async def evaluate(services: Services, body: Mapping[str, Any]) -> IssuerState:
    """The issuer's state now; every failure is a Problem in the state, never raised."""
    key = issuer_key(body)
    uid = body["metadata"]["uid"]
    try:
        spec = parse_issuer_spec(body.get("spec") or {})
        if spec.ca is None:
            return IssuerState(
                key, uid, message="Each Certificate is signed by its own HSM key", spec=spec
            )
        return await _evaluate_ca(services, key, uid, spec, spec.ca)
    except Exception as error:
        return IssuerState(key, uid, problem=as_problem(error))


async def _evaluate_ca(
    services: Services, key: IssuerKey, uid: str, spec: IssuerSpec, settings: CaSettings
) -> IssuerState:
    namespace = key[1]
    material = await _ca_material(services, settings, namespace)
    location = policy.locate(
        services.config, material.key_uri, namespace=namespace, infos=await services.tokens.infos()
    )
    if not location.names_key:
        raise Problem(
            "InvalidURI",
            f"the CA key URI {material.key_uri!r} names a token but no key: add id= or object=",
        )
    token = await services.tokens.token(location.token)

    def verify() -> IssuerState:
        key_ref = token.find_key(id=location.id, label=location.label)
        policy.check_object(
            services.config, location.token, namespace=namespace, label=key_ref.label
        )
        ca_key = x509.hsm_private_key(token, key_ref)
        chain = material.chain
        if not chain:
            found = token.find_certificates(id=key_ref.id)
            if not found:
                raise Problem(
                    "CertificateNotFound",
                    "the token holds no certificate with the CA key's id; store one there "
                    "(`pkcs11-issuer createca --store-in-token`) or name a Secret in "
                    "spec.ca.secretName",
                )
            chain = (cx509.load_der_x509_certificate(found[0].der),)
        now = datetime.datetime.now(datetime.UTC)
        _check_pair(chain[0], ca_key, now)
        signer = x509.Issuer(chain[0], ca_key)
        subject = chain[0].subject.rfc4514_string()
        return IssuerState(
            key,
            uid,
            message=(
                f"Signing CA {subject!r} verified with its key in token {location.token!r}, "
                f"valid until {chain[0].not_valid_after_utc:%Y-%m-%d %H:%M}Z"
            ),
            spec=spec,
            signer=signer,
            chain=chain,
            ca=material.ca or chain[-1],
            token=location.token,
        )

    return await services.blocking(verify)
