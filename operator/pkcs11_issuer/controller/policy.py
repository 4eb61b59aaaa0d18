"""What a custom resource may reach: the configured token a `pkcs11:` URI selects, and the keys
on it that the resource's namespace may name. Pure: live token facts come in as arguments.

A URI in a resource never widens the operator's configuration: it carries no PIN, names modules
only from the allowlist, and resolves to one of the configured tokens. A namespaced resource
(Issuer, Certificate) reaches only the tokens and key labels `tokens[].grants` gives its
namespace; a cluster-scoped one (ClusterIssuer, `namespace=None`) reaches every configured one.

`locate()` checks a URI's label when it has one; a key named only by id is checked with
`check_object()` once its real label has been read from the token.
"""

from __future__ import annotations

import fnmatch
import glob
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from pkcs11_issuer.config import (
    NAMESPACE_PLACEHOLDER,
    Grant,
    OperatorConfig,
    TokenConfig,
    uri_problem,
)
from pkcs11_issuer.hsm.token import TokenInfo
from pkcs11_issuer.uri import PATH_ATTRIBUTES, QUERY_ATTRIBUTES, Pkcs11Uri, UriError, parse

Reason = Literal["InvalidURI", "NotAllowed", "TokenNotFound", "HsmUnavailable"]

_STANDARD = frozenset(PATH_ATTRIBUTES + QUERY_ATTRIBUTES)
_PIN_ATTRIBUTES = ("pin-value", "pin-source")
_ASK_ADMIN = "only modules on the operator's allowlist are loaded; ask the operator admin"
_GRANTS = "the operator admin grants it under tokens[].grants"

# The attributes a token is matched on: URI attribute, its value in the URI, its live value.
_MATCHED: tuple[tuple[str, Callable[[Pkcs11Uri], object], Callable[[TokenInfo], object]], ...] = (
    ("token", lambda uri: uri.token, lambda info: info.label),
    ("manufacturer", lambda uri: uri.manufacturer, lambda info: info.manufacturer),
    ("serial", lambda uri: uri.serial, lambda info: info.serial),
    ("model", lambda uri: uri.model, lambda info: info.model),
    ("slot-id", lambda uri: uri.slot_id, lambda info: info.slot_id),
    ("slot-description", lambda uri: uri.slot_description, lambda info: info.slot_description),
)
_MATCHED_NAMES = tuple(name for name, _uri, _info in _MATCHED)
# Token attributes no TokenInfo field answers: accepting them would mean ignoring them, and
# selecting a token the URI's author did not mean.
_UNMATCHABLE = frozenset(
    {"library-manufacturer", "library-description", "library-version", "slot-manufacturer"}
)


class PolicyError(Exception):
    """A URI or key the resource may not use. `reason` is the condition reason; `message` says
    what is wrong and what to do, and never holds a PIN."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message


@dataclass(frozen=True)
class KeyLocation:
    """Where a resource's key is: a configured token and, for an existing key, its id and/or
    CKA_LABEL."""

    token: str
    id: bytes | None
    label: str | None

    @property
    def names_key(self) -> bool:
        """Whether an existing key is named, rather than only a token to generate one on."""
        return self.id is not None or self.label is not None


def locate(
    config: OperatorConfig,
    uri_text: str,
    *,
    namespace: str | None,
    infos: Mapping[str, TokenInfo | None],
) -> KeyLocation:
    """The configured token and key that `uri_text`, written in a resource of `namespace`
    (None: cluster-scoped), selects. `infos` holds each configured token's live facts, None
    for one that cannot be reached now."""
    uri = _parse(uri_text)
    candidates, scope = _on_allowed_modules(config, uri)
    _refuse_unusable_attributes(uri)
    wanted = {name: read(uri) for name, read, _live in _MATCHED if uri.get(name) is not None}

    granted = [token for token in candidates if _granted(token, namespace)]
    matching = [token for token in granted if _matches(infos.get(token.name), wanted)]
    if len(matching) > 1:
        raise PolicyError(
            "InvalidURI",
            f"the URI matches tokens {_names(matching)}: add token= or serial= to choose one",
        )
    if not matching:
        raise _no_match(candidates, granted, scope, wanted, namespace=namespace, infos=infos)

    token = matching[0].name
    label = uri.object
    if label is not None:
        check_object(config, token, namespace=namespace, label=label)
    return KeyLocation(token=token, id=uri.id, label=label)


def check_object(
    config: OperatorConfig, token: str, *, namespace: str | None, label: str | None
) -> None:
    """Refuse unless a resource of `namespace` may use the key labelled `label` (None: a key
    with no label, or one named only by id whose label is not known yet) on `token`."""
    if namespace is None:
        return
    token_config = config.token(token)
    if token_config is None:
        raise PolicyError(
            "TokenNotFound", f"token {token} is not in the operator configuration any more"
        )
    patterns = _object_patterns(token_config, namespace)
    if not patterns:
        raise PolicyError(
            "NotAllowed", f"namespace {namespace} may not use token {token}; {_GRANTS}"
        )
    # The namespace is escaped so that it can only ever match itself, whatever it holds.
    escaped = glob.escape(namespace)
    if any(
        fnmatch.fnmatchcase(label or "", pattern.replace(NAMESPACE_PLACEHOLDER, escaped))
        for pattern in patterns
    ):
        return
    shown = [pattern.replace(NAMESPACE_PLACEHOLDER, namespace) for pattern in patterns]
    key = f"key {label!r}" if label else "a key without a label"
    raise PolicyError(
        "NotAllowed",
        f"{key} on token {token} is not granted to namespace {namespace} "
        f"(allowed: {', '.join(shown)})",
    )


def granted_tokens(config: OperatorConfig, namespace: str | None) -> list[str]:
    """The names of the tokens a resource of `namespace` may use, in configuration order."""
    return [token.name for token in config.tokens if _granted(token, namespace)]


def _parse(text: str) -> Pkcs11Uri:
    try:
        uri = parse(text)
    except UriError as error:
        raise PolicyError("InvalidURI", f"the key URI is {uri_problem(text, error)}") from None
    for name in _PIN_ATTRIBUTES:
        if uri.get(name) is not None:
            raise PolicyError(
                "NotAllowed",
                f"{name} is not allowed in a resource: the PIN belongs in the Secret named by "
                "the operator configuration (tokens[].pin)",
            )
    for name, value in (*uri.path, *uri.query):
        if name in _STANDARD and name != "id":
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                raise PolicyError(
                    "InvalidURI", f"{name} in the key URI is not UTF-8 text"
                ) from None
    return uri


def _on_allowed_modules(config: OperatorConfig, uri: Pkcs11Uri) -> tuple[list[TokenConfig], str]:
    """The configured tokens on the modules the URI names (all when it names none), and how to
    say so in a message."""
    name, path = uri.module_name, uri.module_path
    if name is None and path is None:
        return list(config.tokens), ""
    modules = dict(config.modules)
    if name is not None:
        if name not in modules:
            allowlisted = ", ".join(modules) or "none"
            raise PolicyError(
                "NotAllowed",
                f"module-name {name!r} is not on the operator's allowlist "
                f"(allowlisted: {allowlisted}); {_ASK_ADMIN}",
            )
        modules = {name: modules[name]}
    if path is not None:
        if path not in config.modules.values():
            # The allowlisted paths stay unsaid: they describe the operator's host, not the URI.
            raise PolicyError(
                "NotAllowed", f"module-path {path!r} is not on the allowlist: {_ASK_ADMIN}"
            )
        modules = {key: value for key, value in modules.items() if value == path}
        if not modules:
            raise PolicyError(
                "InvalidURI",
                f"module-name {name!r} and module-path {path!r} name different modules: "
                "give only one of them",
            )
    tokens = [token for token in config.tokens if token.module in modules]
    return tokens, f" on module {', '.join(modules)}"


def _refuse_unusable_attributes(uri: Pkcs11Uri) -> None:
    for name, _value in (*uri.path, *uri.query):
        if name not in _STANDARD:
            raise PolicyError(
                "NotAllowed",
                f"unknown attribute {name!r}: the operator honours only the standard RFC 7512 "
                "attributes and refuses others rather than ignore them",
            )
    kind = uri.type
    if kind is not None and kind != "private":
        raise PolicyError(
            "InvalidURI",
            f"type={kind} names a {kind} object, but a key URI names a private key: "
            "write type=private or leave type out",
        )
    for name, _value in uri.path:
        if name in _UNMATCHABLE:
            raise PolicyError(
                "InvalidURI",
                f"{name} cannot select a token here: use "
                f"{', '.join(f'{usable}=' for usable in _MATCHED_NAMES)}",
            )


def _covers(grant: Grant, namespace: str) -> bool:
    return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in grant.namespaces)


def _granted(token: TokenConfig, namespace: str | None) -> bool:
    return namespace is None or any(_covers(grant, namespace) for grant in token.grants)


def _object_patterns(token: TokenConfig, namespace: str) -> list[str]:
    patterns: dict[str, None] = {}  # ordered and without repeats, for the message
    for grant in token.grants:
        if _covers(grant, namespace):
            patterns.update(dict.fromkeys(grant.objects))
    return list(patterns)


def _matches(info: TokenInfo | None, wanted: Mapping[str, object]) -> bool:
    return info is not None and all(
        live(info) == wanted[name] for name, _uri, live in _MATCHED if name in wanted
    )


def _may_match(token: TokenConfig, wanted: Mapping[str, object]) -> bool:
    """Whether an unreachable token could match: its configured URI says what some of its
    attributes are, and a contradiction rules it out."""
    configured = token.uri
    return all(
        read(configured) in (None, wanted[name]) for name, read, _live in _MATCHED if name in wanted
    )


def _names(tokens: list[TokenConfig]) -> str:
    return ", ".join(token.name for token in tokens)


def _no_match(
    candidates: list[TokenConfig],
    granted: list[TokenConfig],
    scope: str,
    wanted: Mapping[str, object],
    *,
    namespace: str | None,
    infos: Mapping[str, TokenInfo | None],
) -> PolicyError:
    # Unreachable first: the token the URI means may be one that is down, and calling that
    # NotAllowed or TokenNotFound would stop the retries that fix it.
    unreachable = [
        token for token in granted if infos.get(token.name) is None and _may_match(token, wanted)
    ]
    if unreachable:
        word = "token" if len(unreachable) == 1 else "tokens"
        return PolicyError(
            "HsmUnavailable",
            f"{word} {_names(unreachable)} cannot be reached now, and so cannot be matched "
            "against the URI; this is retried",
        )
    refused = [
        token
        for token in candidates
        if token not in granted and _matches(infos.get(token.name), wanted)
    ]
    if refused:
        return PolicyError(
            "NotAllowed", f"namespace {namespace} may not use token {_names(refused)}; {_GRANTS}"
        )
    asked = ", ".join(f"{name}={value}" for name, value in wanted.items()) or "any token"
    usable = ", ".join(_describe(token, infos.get(token.name)) for token in granted) or "none"
    whose = "configured" if namespace is None else f"namespace {namespace} may use"
    return PolicyError(
        "TokenNotFound",
        f"no token{scope} matches the URI ({asked}); tokens {whose}: {usable}. "
        "Name one of them with token= or serial=",
    )


def _describe(token: TokenConfig, info: TokenInfo | None) -> str:
    return f"{token.name} (unreachable)" if info is None else f"{token.name} (label {info.label!r})"
