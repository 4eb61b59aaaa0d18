"""The operator's own configuration file (YAML; the Helm chart renders it).

Only this file decides which PKCS#11 modules may be loaded, which tokens the operator uses, where
their PINs come from, and which namespaces may use which tokens and keys. Custom resources name
tokens and keys within those limits; they never add modules, tokens or PINs.

    modules:                                  # the allowlist: name -> absolute path
      softhsm: /usr/lib/softhsm/libsofthsm2.so
    tokens:                                   # optional; none by default
      - name: dev                             # [a-z0-9]([-a-z0-9]*[a-z0-9])?, unique
        module: softhsm                       # a name under `modules`
        uri: "pkcs11:token=dev-issuer"        # selects the token: token, manufacturer, serial,
                                              # model, slot-id, slot-description,
                                              # slot-manufacturer; nothing else
        pin:                                  # exactly one of secret or file
          secret:
            name: hsm-pin
            key: pin                          # default "pin"
            namespace: pkcs11-issuer          # default: clusterResourceNamespace
          # file: /etc/pkcs11-issuer/pin      # an absolute path the admin mounts
        maxSessions: 8                        # 1..256, default 8
        grants:                               # default none: only ClusterIssuers use the token
          - namespaces: [team-a, team-b]      # namespace names or globs: "team-*", "*" (all)
            objects: ["{namespace}/*"]        # CKA_LABEL globs (fnmatch, case-sensitive) a
                                              # namespaced resource may name as an existing key;
                                              # "{namespace}" is its namespace; this is the default
    clusterResourceNamespace: pkcs11-issuer   # default "pkcs11-issuer"
    concurrency: 4                            # certificates reconciled at once, 1..64, default 4
    loginRetryInterval: 5m                    # Go duration, at least 1s, default 5m: how long a
                                              # failed login blocks the next one
    keyCleanupTimeout: 1h                     # Go duration, default 1h: how long a deleted
                                              # Certificate waits for its HSM keys to be destroyed
    metrics: {port: 9402}                     # default 9402; 0 disables
    health: {port: 8081}                      # default 8081; 0 disables
    leaderElection:                           # off by default: one replica needs none
      enabled: true                           # only the holder of the Lease reconciles
      namespace: pkcs11-issuer                # default: clusterResourceNamespace
      leaseName: pkcs11-issuer                # default "pkcs11-issuer"
      leaseDuration: 15s                      # how long a silent leader keeps the Lease
      renewDeadline: 10s                      # a leader that cannot renew for this long
                                              # exits; less than leaseDuration
      retryPeriod: 2s                         # how often to renew or try to acquire

Unknown keys are errors at every level, so a misspelt key cannot silently drop a restriction.
A key set to null is the same as a key left out. The PIN itself never appears in this file.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pkcs11_issuer.uri import Pkcs11Uri, UriError, parse
from pkcs11_issuer.x509 import ProfileError, parse_duration

T = TypeVar("T")

DEFAULT_CLUSTER_RESOURCE_NAMESPACE = "pkcs11-issuer"
DEFAULT_OBJECTS = ("{namespace}/*",)
NAMESPACE_PLACEHOLDER = "{namespace}"

# The attributes TokenSelector matches on; anything else in a token URI would be ignored when
# the token is looked up, and an ignored attribute is a restriction the admin thinks exists.
TOKEN_URI_ATTRIBUTES = (
    "token",
    "manufacturer",
    "serial",
    "model",
    "slot-id",
    "slot-description",
    "slot-manufacturer",
)
_KEY_URI_ATTRIBUTES = ("object", "id", "type")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# A namespace name in which '*' and '?' stand for any characters and any one character.
_NAMESPACE_GLOB = re.compile(r"[-a-z0-9*?]+")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_PLACEHOLDER = re.compile(r"\{[^}]*\}")
_DNS_LABEL_MAX = 63
_DNS_SUBDOMAIN_MAX = 253
_PORT_MAX = 65535


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or wrong; the message says where."""


@dataclass(frozen=True)
class PinSource:
    """Where a token's PIN is read from: a key of a Secret, or a file the admin mounts."""

    secret_namespace: str | None = None
    secret_name: str | None = None
    secret_key: str | None = None
    file: str | None = None

    def __post_init__(self) -> None:
        secret = (self.secret_namespace, self.secret_name, self.secret_key)
        whole_secret = all(part is not None for part in secret)
        no_secret = all(part is None for part in secret)
        if not (whole_secret and self.file is None) and not (no_secret and self.file is not None):
            raise ConfigError(
                "a PIN source is exactly one of a Secret (namespace, name and key) or a file"
            )


@dataclass(frozen=True)
class Grant:
    """Namespaces (names or fnmatch globs such as "team-*" or "*") whose Issuers and
    Certificates may use a token, and the key labels they may name there."""

    namespaces: tuple[str, ...]
    objects: tuple[str, ...] = DEFAULT_OBJECTS


@dataclass(frozen=True)
class TokenConfig:
    name: str
    module: str
    uri: Pkcs11Uri
    pin: PinSource
    max_sessions: int = 8
    grants: tuple[Grant, ...] = ()


@dataclass(frozen=True)
class LeaderElection:
    """A coordination.k8s.io Lease that lets one of several replicas work at a time."""

    namespace: str
    lease_name: str = "pkcs11-issuer"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


@dataclass(frozen=True)
class OperatorConfig:
    modules: dict[str, str] = field(default_factory=dict)
    tokens: tuple[TokenConfig, ...] = ()
    cluster_resource_namespace: str = DEFAULT_CLUSTER_RESOURCE_NAMESPACE
    concurrency: int = 4
    login_retry_interval: float = 300.0
    key_cleanup_timeout: float = 3600.0
    metrics_port: int = 9402
    health_port: int = 8081
    leader_election: LeaderElection | None = None

    def token(self, name: str) -> TokenConfig | None:
        """The configured token called `name`, if there is one."""
        return next((token for token in self.tokens if token.name == name), None)

    @classmethod
    def load(cls, path: str | Path) -> OperatorConfig:
        try:
            text = Path(path).read_text(encoding="utf-8")
            data = yaml.load(text, _StrictLoader) or {}  # noqa: S506 (a SafeLoader subclass)
        except OSError as error:
            raise ConfigError(f"cannot read configuration {path}: {error.strerror}") from error
        except yaml.YAMLError as error:
            raise ConfigError(
                f"configuration {path} is not valid YAML: {_yaml_problem(error)}"
            ) from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "configuration") -> OperatorConfig:
        try:
            return _operator_config(data)
        except _Invalid as error:
            where = f"{error.where}: " if error.where else ""
            raise ConfigError(f"{source}: {where}{error.expected}") from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last one
    silently, so a second `grants:` or `objects:` would quietly replace the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<:` merges are meant to be overridden by the keys beside them
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"found duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(error: yaml.YAMLError) -> str:
    # PyYAML quotes the offending line, which could be a PIN written where it does not belong:
    # only the problem and its place are reported.
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return type(error).__name__


class _Invalid(Exception):
    def __init__(self, where: str, expected: str) -> None:
        super().__init__(where, expected)
        self.where = where
        self.expected = expected


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _mapping(
    value: object, where: str, known: tuple[str, ...], *, echo: bool = True
) -> dict[str, Any]:
    """`value` as a mapping whose keys are all in `known`.

    `echo=False` keeps values (and here unknown keys) out of the message: it is used under a
    token's `pin`, where an admin who pasted the PIN itself must not find it in a log line."""
    expected = ", ".join(known)
    if not isinstance(value, dict):
        raise _Invalid(where, f"expected a mapping with keys {expected}; got {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise _Invalid(where, f"keys must be strings; expected {expected}")
        if key not in known:
            if not echo:
                raise _Invalid(where, f"unknown key; expected {expected}")
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise _Invalid(where, f"unknown key {key!r}; {hint}expected {expected}")
    return value


def _optional(
    data: dict[str, Any], key: str, where: str, read: Callable[[object, str], T], default: T
) -> T:
    value = data.get(key)
    return default if value is None else read(value, _at(where, key))


def _required(data: dict[str, Any], key: str, where: str, read: Callable[[object, str], T]) -> T:
    value = data.get(key)
    if value is None:
        raise _Invalid(_at(where, key), "required")
    return read(value, _at(where, key))


def _string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(where, f"expected a non-empty string; got {_kind(value)}")
    return value


def _list(value: object, where: str, *, empty: bool) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid(where, f"expected a list; got {_kind(value)}")
    if not value and not empty:
        # An empty list here would grant nothing; that is more likely a rendering slip than
        # the intent, which is written by leaving the grant out.
        raise _Invalid(where, "expected a list of at least one entry")
    return value


def _integer(value: object, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(where, f"expected a whole number from {low} to {high}; got {_kind(value)}")
    if not low <= value <= high:
        raise _Invalid(where, f"expected a whole number from {low} to {high}; got {value}")
    return value


def _name(
    value: object,
    where: str,
    what: str,
    *,
    pattern: re.Pattern[str] = _DNS_LABEL,
    longest: int = _DNS_LABEL_MAX,
    echo: bool = True,
) -> str:
    text = _string(value, where)
    if len(text) > longest or not pattern.fullmatch(text):
        shown = f"{text!r} is not" if echo else "not"
        raise _Invalid(where, f"{shown} {what}")
    return text


_NAMESPACE = (
    "a namespace name: at most 63 lowercase letters, digits and '-', "
    "starting and ending with a letter or digit"
)


def _absolute_path(value: object, where: str, *, echo: bool = True) -> str:
    text = _string(value, where)
    if not text.startswith("/"):
        raise _Invalid(
            where,
            f"expected an absolute path; got {text!r}" if echo else "expected an absolute path",
        )
    return text


def _port(default: int) -> Callable[[object, str], int]:
    def read(value: object, where: str) -> int:
        section = _mapping(value, where, ("port",))
        return _optional(section, "port", where, lambda v, w: _integer(v, w, 0, _PORT_MAX), default)

    return read


def _duration(value: object, where: str, *, minimum: float) -> float:
    expected = "expected a duration such as 5m, 90s or 1h30m"
    if not isinstance(value, str):
        raise _Invalid(where, f"{expected}; got {_kind(value)}")
    try:
        seconds = parse_duration(value).total_seconds()
    except ProfileError:
        raise _Invalid(where, f"{expected}; got {value!r}") from None
    if seconds < minimum:
        raise _Invalid(where, f"must be at least {minimum:g}s; got {value!r}")
    return seconds


def _operator_config(data: object) -> OperatorConfig:
    top = _mapping(
        data,
        "",
        (
            "modules",
            "tokens",
            "clusterResourceNamespace",
            "concurrency",
            "loginRetryInterval",
            "keyCleanupTimeout",
            "metrics",
            "health",
            "leaderElection",
        ),
    )
    modules: dict[str, str] = _optional(top, "modules", "", _modules, {})
    namespace = _optional(
        top,
        "clusterResourceNamespace",
        "",
        lambda v, w: _name(v, w, _NAMESPACE),
        DEFAULT_CLUSTER_RESOURCE_NAMESPACE,
    )
    tokens: tuple[TokenConfig, ...] = _optional(
        top, "tokens", "", lambda v, w: _tokens(v, w, modules, namespace), ()
    )
    metrics_port = _optional(top, "metrics", "", _port(9402), 9402)
    health_port = _optional(top, "health", "", _port(8081), 8081)
    if metrics_port and metrics_port == health_port:
        raise _Invalid(
            "health.port", f"{health_port} is metrics.port too; give them different ports"
        )
    return OperatorConfig(
        modules=modules,
        tokens=tokens,
        cluster_resource_namespace=namespace,
        concurrency=_optional(top, "concurrency", "", lambda v, w: _integer(v, w, 1, 64), 4),
        # Retrying a refused PIN at once would spend the few attempts an HSM allows before it
        # locks the token.
        login_retry_interval=_optional(
            top, "loginRetryInterval", "", lambda v, w: _duration(v, w, minimum=1.0), 300.0
        ),
        key_cleanup_timeout=_optional(
            top, "keyCleanupTimeout", "", lambda v, w: _duration(v, w, minimum=0.0), 3600.0
        ),
        metrics_port=metrics_port,
        health_port=health_port,
        leader_election=_optional(
            top, "leaderElection", "", lambda v, w: _leader_election(v, w, namespace), None
        ),
    )


def _leader_election(value: object, where: str, default_namespace: str) -> LeaderElection | None:
    section = _mapping(
        value,
        where,
        ("enabled", "namespace", "leaseName", "leaseDuration", "renewDeadline", "retryPeriod"),
    )
    enabled = section.get("enabled", False)
    if not isinstance(enabled, bool):
        raise _Invalid(_at(where, "enabled"), f"expected true or false; got {_kind(enabled)}")
    if not enabled:
        return None

    def duration(key: str, default: float) -> float:
        return _optional(section, key, where, lambda v, w: _duration(v, w, minimum=1.0), default)

    election = LeaderElection(
        namespace=_optional(
            section, "namespace", where, lambda v, w: _name(v, w, _NAMESPACE), default_namespace
        ),
        lease_name=_optional(
            section,
            "leaseName",
            where,
            lambda v, w: _name(
                v,
                w,
                "a Lease name (a DNS subdomain)",
                pattern=_DNS_SUBDOMAIN,
                longest=_DNS_SUBDOMAIN_MAX,
            ),
            "pkcs11-issuer",
        ),
        lease_duration=duration("leaseDuration", 15.0),
        renew_deadline=duration("renewDeadline", 10.0),
        retry_period=duration("retryPeriod", 2.0),
    )
    # The same ordering client-go insists on: a leader must give up before its Lease can
    # expire under it, and must try to renew more than once before it gives up.
    if not election.renew_deadline < election.lease_duration:
        raise _Invalid(
            _at(where, "renewDeadline"),
            "must be shorter than leaseDuration, or two replicas could both think they lead",
        )
    if not election.retry_period < election.renew_deadline:
        raise _Invalid(_at(where, "retryPeriod"), "must be shorter than renewDeadline")
    return election


def _modules(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Invalid(
            where, f"expected a mapping of module names to absolute paths; got {_kind(value)}"
        )
    modules: dict[str, str] = {}
    for name, path in value.items():
        if not isinstance(name, str) or not name:
            raise _Invalid(where, "module names must be non-empty strings")
        modules[name] = _absolute_path(path, _at(where, name))
    return modules


def _tokens(
    value: object, where: str, modules: dict[str, str], namespace: str
) -> tuple[TokenConfig, ...]:
    tokens: list[TokenConfig] = []
    for index, item in enumerate(_list(value, where, empty=True)):
        at = f"{where}[{index}]"
        token = _token(item, at, modules, namespace)
        for earlier_index, earlier in enumerate(tokens):
            earlier_at = f"{where}[{earlier_index}]"
            if earlier.name == token.name:
                raise _Invalid(f"{at}.name", f"{token.name!r} is already the name of {earlier_at}")
            if earlier.module == token.module and set(earlier.uri.path) == set(token.uri.path):
                # Two names for one token would mean two session pools and two sets of grants
                # for the same keys.
                raise _Invalid(f"{at}.uri", f"selects the same token as {earlier_at}.uri")
        tokens.append(token)
    return tuple(tokens)


def _token(value: object, where: str, modules: dict[str, str], namespace: str) -> TokenConfig:
    data = _mapping(value, where, ("name", "module", "uri", "pin", "maxSessions", "grants"))
    return TokenConfig(
        name=_required(
            data,
            "name",
            where,
            lambda v, w: _name(
                v,
                w,
                "a token name: lowercase letters, digits and '-', starting and ending with a "
                "letter or digit, at most 63",
            ),
        ),
        module=_required(data, "module", where, lambda v, w: _module_name(v, w, modules)),
        uri=_required(data, "uri", where, _token_uri),
        pin=_required(data, "pin", where, lambda v, w: _pin(v, w, namespace)),
        max_sessions=_optional(data, "maxSessions", where, lambda v, w: _integer(v, w, 1, 256), 8),
        grants=_optional(data, "grants", where, _grants, ()),
    )


def _module_name(value: object, where: str, modules: dict[str, str]) -> str:
    name = _string(value, where)
    if name not in modules:
        known = ", ".join(modules) or "none"
        raise _Invalid(where, f"{name!r} is not a name under `modules` (modules: {known})")
    return name


def uri_problem(text: str, error: UriError) -> str:
    """What is wrong with a URI that did not parse, without any PIN it may hold.

    The parser's reasons quote stray characters and attributes, which in a URI carrying a
    pin-value could be part of the PIN; then only the position is given."""
    if "pin-value" in text.lower():
        return (
            f"not a valid pkcs11: URI (error at position {error.position}; the details are not "
            "shown because the URI holds a pin-value)"
        )
    return f"not a valid pkcs11: URI: {error}"


def _token_uri(value: object, where: str) -> Pkcs11Uri:
    text = _string(value, where)
    try:
        uri = parse(text)
    except UriError as error:
        raise _Invalid(where, uri_problem(text, error)) from None
    allowed = ", ".join(TOKEN_URI_ATTRIBUTES)
    for name, raw in uri.path:
        if name in _KEY_URI_ATTRIBUTES:
            raise _Invalid(
                where,
                f"{name}= belongs to a key, but this URI selects a token (resources name their "
                f"keys); use only {allowed}",
            )
        if name not in TOKEN_URI_ATTRIBUTES:
            raise _Invalid(where, f"{name!r} cannot select a token here; use only {allowed}")
        if name != "slot-id":
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _Invalid(where, f"{name} is not UTF-8 text") from None
    if uri.query:
        raise _Invalid(
            where,
            f"query attribute {uri.query[0][0]!r} is not allowed here: the module comes from "
            "`module` and the PIN from `pin`",
        )
    return uri


def _pin(value: object, where: str, default_namespace: str) -> PinSource:
    data = _mapping(value, where, ("secret", "file"), echo=False)
    if (data.get("secret") is None) == (data.get("file") is None):
        raise _Invalid(
            where, "give exactly one of secret (a Kubernetes Secret) or file (a mounted file)"
        )
    if data.get("file") is not None:
        return PinSource(file=_absolute_path(data["file"], _at(where, "file"), echo=False))
    at = _at(where, "secret")
    secret = _mapping(data["secret"], at, ("name", "key", "namespace"), echo=False)
    return PinSource(
        secret_name=_required(
            secret,
            "name",
            at,
            lambda v, w: _name(
                v,
                w,
                "a Secret name: lowercase letters, digits, '-' and '.', at most 253",
                pattern=_DNS_SUBDOMAIN,
                longest=_DNS_SUBDOMAIN_MAX,
                echo=False,
            ),
        ),
        secret_key=_optional(
            secret,
            "key",
            at,
            lambda v, w: _name(
                v,
                w,
                "a Secret key: letters, digits, '-', '_' and '.', at most 253",
                pattern=_SECRET_KEY,
                longest=_DNS_SUBDOMAIN_MAX,
                echo=False,
            ),
            "pin",
        ),
        secret_namespace=_optional(
            secret,
            "namespace",
            at,
            lambda v, w: _name(v, w, _NAMESPACE, echo=False),
            default_namespace,
        ),
    )


def _grants(value: object, where: str) -> tuple[Grant, ...]:
    return tuple(
        _grant(item, f"{where}[{index}]")
        for index, item in enumerate(_list(value, where, empty=True))
    )


def _grant(value: object, where: str) -> Grant:
    data = _mapping(value, where, ("namespaces", "objects"))
    return Grant(
        namespaces=_required(data, "namespaces", where, _namespaces),
        objects=_optional(data, "objects", where, _objects, DEFAULT_OBJECTS),
    )


def _namespaces(value: object, where: str) -> tuple[str, ...]:
    return tuple(
        _name(
            item,
            f"{where}[{index}]",
            "a namespace name or glob: lowercase letters, digits and '-', with '*' for any "
            "characters and '?' for any one, at most 63",
            pattern=_NAMESPACE_GLOB,
        )
        for index, item in enumerate(_list(value, where, empty=False))
    )


def _objects(value: object, where: str) -> tuple[str, ...]:
    patterns = []
    for index, item in enumerate(_list(value, where, empty=False)):
        pattern = _string(item, f"{where}[{index}]")
        for placeholder in _PLACEHOLDER.findall(pattern):
            if placeholder != NAMESPACE_PLACEHOLDER:
                raise _Invalid(
                    f"{where}[{index}]",
                    f"unknown placeholder {placeholder!r}; the only one is {NAMESPACE_PLACEHOLDER}",
                )
        patterns.append(pattern)
    return tuple(patterns)
