"""Certificate: keep a Secret holding a valid certificate for an HSM key, as the spec asks.

One level-based pass (`CertificateReconciler.reconcile`) decides from what exists now:
nothing to do, re-issue (with the reason cert-manager would give), or clean up after
deletion. Every step is safe to repeat after a crash at any point:

- a generated key's CKA_ID is derived from the Certificate's uid and the key's generation,
  so a retry finds the key an interrupted pass made instead of making a second one;
- the Secret is written before the status, and records the revision, so a status that lags
  behind the Secret is caught up without signing again;
- an old key is destroyed only after the Secret that replaces it is in place, and a pass that
  finds the status lagging destroys it then.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from cryptography import x509 as cx509

from pkcs11_issuer import hsm, x509
from pkcs11_issuer.controller import conditions, policy
from pkcs11_issuer.controller.conditions import Condition
from pkcs11_issuer.controller.issuers import IssuerKey, IssuerState
from pkcs11_issuer.controller.problems import Problem, as_problem
from pkcs11_issuer.controller.secrets import (
    GROUP,
    VERSION,
    Issued,
    KeyFacts,
    Unreadable,
    build_secret,
    is_owned,
    metadata_for,
    read_issued,
)
from pkcs11_issuer.controller.services import Services
from pkcs11_issuer.controller.spec import CertificateSpec, SpecError, parse_certificate_spec
from pkcs11_issuer.kube import ApiError, core_path, group_path

log = logging.getLogger(__name__)

FINALIZER = f"{GROUP}/hsm-key-cleanup"
# The documented way out when the HSM is gone for good: delete without destroying the key.
SKIP_KEY_CLEANUP = f"{GROUP}/skip-key-cleanup"

RECHECK_SECONDS = 3600.0  # a Ready certificate is looked at again at least this often
PERMANENT_RETRY_SECONDS = 300.0
MAX_BACKOFF_SECONDS = 300.0
ISSUER_WAIT_SECONDS = 60.0
# A wrong PIN is retried this often; the token's own guard makes a retry with an unchanged
# PIN cost no login, while a PIN fixed in its Secret is picked up within this time.
PIN_RETRY_SECONDS = 60.0

IssuerLookup = Callable[[IssuerKey], Awaitable[IssuerState | None]]
Remember = Callable[[Mapping[str, Any]], None]


def generated_key_id(uid: str, generation: int) -> bytes:
    return hashlib.sha256(f"pkcs11-issuer/{uid}/{generation}".encode()).digest()[:16]


def generated_key_label(namespace: str, name: str, uid: str, generation: int) -> str:
    # The uid part keeps labels unique when a Certificate is re-created under the same name
    # while its old keys stay behind (deletionPolicy Retain, a token reused by a new cluster).
    return f"{namespace}/{name}/{uid[:8]}.{generation}"


def _name(body: Mapping[str, Any]) -> str:
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def backoff(attempts: int) -> float:
    return float(min(5 * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))


@dataclass(frozen=True)
class _Reissue:
    reason: str
    message: str


@dataclass(frozen=True)
class _Judgement:
    secret: Mapping[str, Any] | None
    current: Issued | None  # what an intact Secret of ours holds
    reissue: _Reissue | None  # why it must be replaced; None: it is fine


@dataclass(frozen=True)
class _Key:
    token: hsm.Token
    ref: hsm.KeyRef
    facts: KeyFacts


class CertificateReconciler:
    def __init__(self, services: Services, issuer_state: IssuerLookup, remember: Remember) -> None:
        self._services = services
        self._issuer_state = issuer_state
        # Bodies the API returns for our own writes go straight to the controller's view, so
        # the next pass does not act on what it has already changed.
        self._remember = remember
        # (token, key id, SubjectPublicKeyInfo) seen in the HSM by this process: a restart
        # looks each key up once, then never again while the Secret stays the same.
        self._verified_keys: set[tuple[str, bytes, bytes]] = set()
        self._attempts: dict[tuple[str, str], int] = {}

    # -- API writes -------------------------------------------------------------------------

    def _path(self, body: Mapping[str, Any], subresource: str | None = None) -> str:
        metadata = body["metadata"]
        return group_path(
            GROUP, VERSION, "certificates", metadata["namespace"], metadata["name"], subresource
        )

    async def _write_status(
        self, body: Mapping[str, Any], wanted: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        patch = conditions.status_patch(body.get("status"), wanted)
        if patch is None:
            return None
        updated = await self._services.kube.patch(self._path(body, "status"), {"status": patch})
        self._remember(updated)
        return updated

    async def _event(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        await self._services.kube.post_event(
            body,
            type="Warning" if kind == "Warning" else "Normal",
            reason=reason,
            message=message,
        )

    # -- the pass ---------------------------------------------------------------------------

    async def reconcile(self, body: Mapping[str, Any]) -> float | None:
        """One pass; returns when to look again (seconds), or None to wait for a change."""
        if body["metadata"].get("deletionTimestamp"):
            return await self._finalize(body)
        status = body.get("status") or {}
        try:
            spec = parse_certificate_spec(body.get("spec") or {})
            secret = await self._services.read_secret(
                body["metadata"]["namespace"], spec.secret_name
            )
            try:
                state = await self._ready_issuer(body, spec)
            except Problem as problem:
                if problem.reason == "IssuerNotReady" and self._still_good(body, spec, secret):
                    # Nothing to issue now, and what was issued stays valid: no reason to
                    # call this Certificate not Ready because its issuer is unwell.
                    log.info("%s: %s; keeping the current certificate", _name(body), problem)
                    return ISSUER_WAIT_SECONDS
                raise
            judgement = await self._judge(body, spec, state, secret)
            if judgement.reissue is None:
                assert judgement.current is not None and secret is not None
                return await self._keep(body, spec, judgement.current, secret)
            return await self._issue(body, spec, state, judgement)
        except Exception as error:
            return await self._failed(body, status, as_problem(error))

    def _still_good(
        self, body: Mapping[str, Any], spec: CertificateSpec, secret: Mapping[str, Any] | None
    ) -> bool:
        if secret is None or not is_owned(secret, body):
            return False
        try:
            current = read_issued(secret)
        except Unreadable:
            return False
        leaf = current.certificate
        renewal = spec.renewal_time(leaf.not_valid_before_utc, leaf.not_valid_after_utc)
        return current.spec_digest == spec.digest() and _now() < renewal

    async def _ready_issuer(self, body: Mapping[str, Any], spec: CertificateSpec) -> IssuerState:
        ref = spec.issuer_ref
        state = await self._issuer_state(ref.key(body["metadata"]["namespace"]))
        if state is None:
            raise Problem("IssuerNotFound", f"{ref.kind} {ref.name!r} does not exist")
        if state.problem is not None:
            raise Problem(
                "IssuerNotReady",
                f"{ref.kind} {ref.name!r} is not ready: {state.problem.reason}: "
                f"{state.problem.message}",
            )
        return state

    async def _judge(
        self,
        body: Mapping[str, Any],
        spec: CertificateSpec,
        state: IssuerState,
        secret: Mapping[str, Any] | None,
    ) -> _Judgement:
        """What the Secret holds, and why it must be replaced."""
        where = f"Secret {spec.secret_name!r}"
        if secret is None:
            return _Judgement(None, None, _Reissue("DoesNotExist", f"{where} does not exist"))
        if not is_owned(secret, body):
            raise Problem(
                "SecretConflict",
                f"{where} exists but is not managed by this Certificate (it lacks the "
                "pkcs11-issuer.io/certificate-name label or the controller ownerReference); "
                "delete it or choose another secretName",
            )
        try:
            current = read_issued(secret)
        except Unreadable as error:
            return _Judgement(secret, None, _Reissue("SecretMismatch", f"{where}: {error}"))
        return _Judgement(secret, current, await self._staleness(spec, state, current))

    async def _staleness(
        self, spec: CertificateSpec, state: IssuerState, current: Issued
    ) -> _Reissue | None:
        ref = spec.issuer_ref
        leaf = current.certificate
        now = _now()
        if current.spec_digest != spec.digest():
            return _Reissue("SpecChanged", "the Certificate's spec changed")
        if current.issuer != (ref.group, ref.kind, ref.name):
            kind, name = current.issuer[1:]
            return _Reissue("IncorrectIssuer", f"issued by another issuer ({kind} {name!r})")
        if state.chain and current.chain[:1] != state.chain[:1]:
            return _Reissue("IncorrectIssuer", "the issuer's CA certificate changed")
        if now >= leaf.not_valid_after_utc:
            expired = f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z"
            return _Reissue("Expired", f"the certificate expired at {expired}")
        if now >= spec.renewal_time(leaf.not_valid_before_utc, leaf.not_valid_after_utc):
            return _Reissue("Renewing", "renewal time reached")
        return await self._key_problem(current, leaf)

    async def _key_problem(self, current: Issued, leaf: cx509.Certificate) -> _Reissue | None:
        spki = x509.subject_public_key_info(leaf.public_key())
        seen = (current.key.token, current.key.id, spki)
        if seen in self._verified_keys:
            return None
        try:
            token = await self._services.tokens.token(current.key.token)
            key = await self._services.blocking(lambda: token.find_key(id=current.key.id))
        except hsm.KeyNotFoundError:
            return _Reissue("KeyMissing", f"the key {current.key.uri} is gone from the HSM")
        except hsm.HsmUnavailableError:
            # Cannot look now: the certificate stays as good as it was; a later pass looks.
            return None
        if x509.subject_public_key_info(key.public_key) != spki:
            return _Reissue("SecretMismatch", "the certificate is not for the key the Secret names")
        self._verified_keys.add(seen)
        return None

    # -- nothing to issue -------------------------------------------------------------------

    async def _keep(
        self,
        body: Mapping[str, Any],
        spec: CertificateSpec,
        current: Issued,
        secret: Mapping[str, Any],
    ) -> float:
        wanted_metadata = metadata_for(
            body, labels=spec.secret_labels, annotations=spec.secret_annotations
        )
        metadata = secret["metadata"]
        stale = {
            part: {k: v for k, v in wanted.items() if (metadata.get(part) or {}).get(k) != v}
            for part, wanted in wanted_metadata.items()
        }
        if any(stale.values()):
            await self._services.kube.patch(
                core_path("secrets", metadata["namespace"], metadata["name"]),
                {"metadata": {part: values for part, values in stale.items() if values}},
            )
        status = body.get("status") or {}
        if status.get("revision") != current.revision:
            # The Secret is ahead of the status: a pass was interrupted after writing it.
            await self._destroy_replaced_key(body, spec, current.key, current.revision)
        return await self._succeeded(body, spec, current)

    async def _succeeded(
        self, body: Mapping[str, Any], spec: CertificateSpec, issued: Issued
    ) -> float:
        leaf = issued.certificate
        renewal = spec.renewal_time(leaf.not_valid_before_utc, leaf.not_valid_after_utc)
        now = _now()
        ready = Condition("Ready", "True", "Ready", "Certificate is up to date and has not expired")
        wanted = {
            "conditions": conditions.render(
                [ready], body.get("status"), generation=body["metadata"].get("generation"), now=now
            ),
            "notBefore": conditions.timestamp(leaf.not_valid_before_utc),
            "notAfter": conditions.timestamp(leaf.not_valid_after_utc),
            "renewalTime": conditions.timestamp(renewal),
            "revision": issued.revision,
            "lastFailureTime": None,
            "failedIssuanceAttempts": None,
        }
        await self._write_status(body, wanted)
        metadata = body["metadata"]
        self._attempts.pop((metadata["namespace"], metadata["name"]), None)
        self._services.metrics.certificate(
            metadata["namespace"],
            metadata["name"],
            ready="True",
            not_after=leaf.not_valid_after_utc,
            renewal=renewal,
        )
        return min(max((renewal - now).total_seconds(), 1.0), RECHECK_SECONDS)

    # -- issuing ----------------------------------------------------------------------------

    async def _issue(
        self,
        body: Mapping[str, Any],
        spec: CertificateSpec,
        state: IssuerState,
        judgement: _Judgement,
    ) -> float:
        secret, current, why = judgement.secret, judgement.current, judgement.reissue
        assert why is not None
        metadata = body["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        revision = (
            max(
                int((body.get("status") or {}).get("revision") or 0),
                current.revision if current else 0,
            )
            + 1
        )
        log.info("issuing %s/%s revision %d: %s", namespace, name, revision, why.message)
        started = _now()
        key = await self._key_for(body, spec, state, revision)
        token = key.token
        profile = state.spec.stamp(spec.profile) if state.spec else spec.profile

        def sign() -> cx509.Certificate:
            certificate_key = x509.hsm_private_key(token, key.ref)
            signer: x509.Signer = state.signer or x509.SelfSigner(certificate_key)
            # The key was generated (or found) in our own HSM a moment ago: a CSR signed by it
            # would cost an HSM signature to prove what the operator already knows.
            return signer.issue_for_key(certificate_key.public_key(), profile)

        leaf = await self._services.blocking(sign)
        ref = spec.issuer_ref
        issuer = (ref.group, ref.kind, ref.name)
        new_secret = build_secret(
            body,
            secret_name=spec.secret_name,
            leaf=leaf,
            chain=state.chain,
            ca=state.ca or leaf,
            key=key.facts,
            revision=revision,
            spec_digest=spec.digest(),
            issuer=issuer,
            template_labels=spec.secret_labels,
            template_annotations=spec.secret_annotations,
        )
        kube = self._services.kube
        if secret is None:
            await kube.create(core_path("secrets", namespace), new_secret)
        else:
            new_secret["metadata"]["resourceVersion"] = secret["metadata"]["resourceVersion"]
            await kube.replace(core_path("secrets", namespace, spec.secret_name), new_secret)
        self._verified_keys.add(
            (key.facts.token, key.facts.id, x509.subject_public_key_info(leaf.public_key()))
        )
        await self._destroy_replaced_key(body, spec, key.facts, revision)
        issued = Issued(leaf, state.chain, key.facts, revision, spec.digest(), issuer)
        delay = await self._succeeded(body, spec, issued)
        self._services.metrics.issuance("issued", (_now() - started).total_seconds())
        await self._event(
            body,
            "Normal",
            "Issued",
            f"Issued revision {revision} ({why.reason}: {why.message}): serial "
            f"{leaf.serial_number:x}, valid until {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z,"
            f" key {key.facts.uri}",
        )
        return delay

    async def _key_for(
        self,
        body: Mapping[str, Any],
        spec: CertificateSpec,
        state: IssuerState,
        revision: int,
    ) -> _Key:
        metadata = body["metadata"]
        namespace = metadata["namespace"]
        settings = spec.private_key
        services = self._services
        if settings.pkcs11 is not None:
            location = policy.locate(
                services.config,
                settings.pkcs11,
                namespace=namespace,
                infos=await services.tokens.infos(),
            )
        else:
            location = policy.KeyLocation(self._default_token(namespace, state), None, None)
        token = await services.tokens.token(location.token)
        info = token.info

        def facts(ref: hsm.KeyRef, generated: bool) -> KeyFacts:
            return KeyFacts(
                location.token,
                info.label,
                info.serial,
                ref.id,
                ref.label,
                token.key_uri(ref).format(),
                generated,
            )

        if location.names_key:

            def adopt() -> hsm.KeyRef:
                ref = token.find_key(id=location.id, label=location.label)
                policy.check_object(
                    services.config, location.token, namespace=namespace, label=ref.label
                )
                return ref

            ref = await services.blocking(adopt)
            return _Key(token, ref, facts(ref, generated=False))

        # Never: one key for the Certificate's life, generation 0. Always: one per revision.
        generation = 0 if settings.rotation_policy == "Never" else revision
        await self._ensure_finalizer(body)
        key_id = generated_key_id(metadata["uid"], generation)
        label = generated_key_label(namespace, metadata["name"], metadata["uid"], generation)

        def find_or_generate() -> hsm.KeyRef:
            # Generation first: it refuses an id that is taken, so the usual case (a new key)
            # costs no separate look-up.
            try:
                return token.generate_key(settings.spec, id=key_id, label=label)
            except hsm.KeyExistsError:
                pass
            try:
                ref = token.find_key(id=key_id)
            except hsm.KeyNotFoundError:
                ref = None  # half a key pair, left by a process killed mid-generation
            if ref is not None and ref.spec == settings.spec:
                return ref  # kept (rotation Never), or made by an interrupted pass
            # The id is derived from this Certificate's uid, so whatever carries it is ours.
            token.delete_key(id=key_id)
            return token.generate_key(settings.spec, id=key_id, label=label)

        ref = await services.blocking(find_or_generate)
        return _Key(token, ref, facts(ref, generated=True))

    def _default_token(self, namespace: str, state: IssuerState) -> str:
        config = self._services.config
        granted = policy.granted_tokens(config, namespace)
        if state.token is not None and state.token in granted:
            return state.token
        if len(granted) == 1:
            return granted[0]
        choices = ", ".join(granted) or "none"
        raise Problem(
            "InvalidSpec",
            "spec.privateKey.pkcs11 must name the token where the key is generated "
            f"(tokens namespace {namespace!r} may use: {choices})",
        )

    async def _ensure_finalizer(self, body: Mapping[str, Any]) -> None:
        metadata = body["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        if FINALIZER in finalizers:
            return
        updated = await self._services.kube.patch(
            self._path(body),
            {
                "metadata": {
                    "finalizers": [*finalizers, FINALIZER],
                    "resourceVersion": metadata["resourceVersion"],
                }
            },
        )
        self._remember(updated)

    async def _destroy_replaced_key(
        self, body: Mapping[str, Any], spec: CertificateSpec, kept: KeyFacts, revision: int
    ) -> None:
        """Destroy the key the previous revision used, if we generated it and it is not the
        one now in use. Its id is known without the old Secret, which may be gone or garbled:
        with rotation, key generations are revisions."""
        if spec.private_key.deletion_policy == "Retain" or not kept.generated:
            return
        old_id = generated_key_id(body["metadata"]["uid"], revision - 1)
        if old_id == kept.id:
            return
        token = await self._services.tokens.token(kept.token)
        if await self._services.blocking(lambda: token.delete_key(id=old_id)):
            await self._event(
                body, "Normal", "KeyDestroyed", f"Destroyed the key of revision {revision - 1}"
            )

    # -- failure ----------------------------------------------------------------------------

    async def _failed(
        self, body: Mapping[str, Any], status: Mapping[str, Any], problem: Problem
    ) -> float:
        metadata = body["metadata"]
        # Counted in memory as well: a failure that repeats unchanged writes no status.
        key = (metadata["namespace"], metadata["name"])
        attempts = max(int(status.get("failedIssuanceAttempts") or 0), self._attempts.get(key, 0))
        attempts += 1
        self._attempts[key] = attempts
        log.warning(
            "%s/%s: %s: %s",
            metadata["namespace"],
            metadata["name"],
            problem.reason,
            problem.message,
        )
        now = _now()
        wanted_conditions = [
            Condition("Ready", "False", problem.reason, problem.message),
            Condition("Issuing", "False", problem.reason, problem.message),
        ]
        previous = conditions.find(status, "Ready")
        wanted = {
            "conditions": conditions.render(
                wanted_conditions, status, generation=metadata.get("generation"), now=now
            ),
            "failedIssuanceAttempts": attempts,
            "lastFailureTime": conditions.timestamp(now),
        }
        unchanged = previous is not None and (previous.get("reason"), previous.get("message")) == (
            problem.reason,
            problem.message,
        )
        if unchanged:
            # The same failure again: no new status write, no new Event.
            wanted = {"conditions": wanted["conditions"]}
        await self._write_status(body, wanted)
        self._services.metrics.certificate(
            metadata["namespace"], metadata["name"], ready="False", not_after=None, renewal=None
        )
        if not unchanged:
            self._services.metrics.issuance("failed", 0.0)
            await self._event(body, "Warning", problem.reason, problem.message)
        if problem.reason in ("PinIncorrect", "PinLocked"):
            return min(PIN_RETRY_SECONDS, self._services.config.login_retry_interval)
        return backoff(attempts) if problem.transient else PERMANENT_RETRY_SECONDS

    # -- deletion ---------------------------------------------------------------------------

    async def _finalize(self, body: Mapping[str, Any]) -> float | None:
        metadata = body["metadata"]
        self._services.metrics.forget_certificate(metadata["namespace"], metadata["name"])
        if FINALIZER not in (metadata.get("finalizers") or ()):
            return None
        annotations = metadata.get("annotations") or {}
        retain = ((body.get("spec") or {}).get("privateKey") or {}).get(
            "deletionPolicy"
        ) == "Retain"
        if annotations.get(SKIP_KEY_CLEANUP) == "true" or retain:
            await self._remove_finalizer(body)
            return None
        try:
            destroyed = await self._destroy_all_keys(body)
        except Exception as error:
            return await self._cleanup_failed(body, as_problem(error))
        await self._remove_finalizer(body)
        if destroyed:
            await self._event(
                body,
                "Normal",
                "KeyDestroyed",
                f"Destroyed {destroyed} HSM key pair(s) of this Certificate",
            )
        return None

    async def _destroy_all_keys(self, body: Mapping[str, Any]) -> int:
        """Every key this Certificate may have generated: generation 0 (rotation Never) and
        the revisions around its current one that an interrupted pass may have left.

        Only ids derived from the Certificate's own uid are destroyed, never an id read from
        its Secret: whoever can edit that Secret must not be able to aim the operator at
        another key."""
        metadata = body["metadata"]
        revision = int((body.get("status") or {}).get("revision") or 0)
        spec = body.get("spec") or {}
        secret = await self._services.read_secret(metadata["namespace"], spec.get("secretName", ""))
        if secret is not None and is_owned(secret, body):
            with contextlib.suppress(Unreadable):
                # At most one revision ahead of the status: a pass interrupted before it.
                revision = min(max(revision, read_issued(secret).revision), revision + 1)
        token_name = await self._generation_token(body)
        if token_name is None:
            return 0
        token = await self._services.tokens.token(token_name)
        generations = {0, *range(max(revision - 1, 1), revision + 2)}
        destroyed = 0
        for generation in sorted(generations):
            key_id = generated_key_id(metadata["uid"], generation)
            if await self._services.blocking(partial(token.delete_key, id=key_id)):
                destroyed += 1
        return destroyed

    async def _generation_token(self, body: Mapping[str, Any]) -> str | None:
        """The token this Certificate generates keys on, when that can still be told."""
        try:
            spec = parse_certificate_spec(body.get("spec") or {})
        except SpecError:
            return None
        namespace = body["metadata"]["namespace"]
        if spec.private_key.pkcs11 is None:
            state = await self._issuer_state(spec.issuer_ref.key(namespace))
            granted = policy.granted_tokens(self._services.config, namespace)
            if state is not None and state.token in granted:
                return state.token
            return granted[0] if len(granted) == 1 else None
        location = policy.locate(
            self._services.config,
            spec.private_key.pkcs11,
            namespace=namespace,
            infos=await self._services.tokens.infos(),
        )
        return None if location.names_key else location.token

    async def _cleanup_failed(self, body: Mapping[str, Any], problem: Problem) -> float | None:
        metadata = body["metadata"]
        deleted_at = conditions.parse_timestamp(metadata.get("deletionTimestamp")) or _now()
        waited = (_now() - deleted_at).total_seconds()
        limit = self._services.config.key_cleanup_timeout
        if waited >= limit:
            await self._remove_finalizer(body)
            await self._event(
                body,
                "Warning",
                "KeyNotDestroyed",
                f"Gave up destroying this Certificate's HSM keys after {limit:.0f}s "
                f"({problem.reason}: {problem.message}); find them by label "
                f"'{metadata['namespace']}/{metadata['name']}/*' with `pkcs11-issuer keys list` "
                "and delete them there",
            )
            return None
        message = (
            f"Waiting to destroy this Certificate's HSM keys ({problem.reason}: {problem.message});"
            f" deletion completes without them after {limit:.0f}s, or at once when annotated "
            f"{SKIP_KEY_CLEANUP}=true"
        )
        await self._write_status(
            body,
            {
                "conditions": conditions.render(
                    [Condition("Ready", "False", "DeletionPending", message)],
                    body.get("status"),
                    generation=metadata.get("generation"),
                    now=_now(),
                )
            },
        )
        return min(backoff(int(waited // 10) + 1), max(limit - waited, 1.0))

    async def _remove_finalizer(self, body: Mapping[str, Any]) -> None:
        finalizers = list(body["metadata"].get("finalizers") or [])
        index = finalizers.index(FINALIZER)
        try:
            await self._services.kube.patch(
                self._path(body),
                [
                    {"op": "test", "path": f"/metadata/finalizers/{index}", "value": FINALIZER},
                    {"op": "remove", "path": f"/metadata/finalizers/{index}"},
                ],
                kind="json",
            )
        except ApiError as error:
            # 409/422: the list moved under us; the next pass sees the current one.
            if error.status not in (409, 422):
                raise
