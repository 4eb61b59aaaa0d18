"""The operator configuration file: the documented format, defaults, and a refusal for every
wrong field that names the place, including keys nobody defined."""

from __future__ import annotations

import copy
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pkcs11_issuer import config as config_module
from pkcs11_issuer.config import (
    ConfigError,
    Grant,
    LeaderElection,
    OperatorConfig,
    PinSource,
    TokenConfig,
)
from pkcs11_issuer.uri import parse

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
PIN_LIKE = "S3cret-PIN"

TOKEN: dict[str, Any] = {
    "name": "dev",
    "module": "softhsm",
    "uri": "pkcs11:token=dev-issuer",
    "pin": {"secret": {"name": "hsm-pin"}},
}
MINIMAL: dict[str, Any] = {"modules": {"softhsm": SOFTHSM}, "tokens": [TOKEN]}


def load(data: Any) -> OperatorConfig:
    return OperatorConfig.from_dict(data, source="config.yaml")


def changed(edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    edit(data)
    return data


def token(data: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = data["tokens"][0]
    return first


def test_the_docstring_example_is_the_reference_and_parses(tmp_path: Path) -> None:
    doc = config_module.__doc__
    assert doc is not None
    example = textwrap.dedent(doc.split("\n\n", 2)[2].split("\n\nUnknown keys")[0])
    path = tmp_path / "config.yaml"
    path.write_text(example)
    loaded = OperatorConfig.load(path)
    assert loaded == OperatorConfig(
        modules={"softhsm": SOFTHSM},
        tokens=(
            TokenConfig(
                name="dev",
                module="softhsm",
                uri=parse("pkcs11:token=dev-issuer"),
                pin=PinSource(
                    secret_namespace="pkcs11-issuer", secret_name="hsm-pin", secret_key="pin"
                ),
                max_sessions=8,
                grants=(Grant(namespaces=("team-a", "team-b"), objects=("{namespace}/*",)),),
            ),
        ),
        cluster_resource_namespace="pkcs11-issuer",
        concurrency=4,
        login_retry_interval=300.0,
        key_cleanup_timeout=3600.0,
        metrics_port=9402,
        health_port=8081,
        leader_election=LeaderElection(namespace="pkcs11-issuer"),
    )


def test_modules_alone_stay_valid_and_everything_else_has_its_default() -> None:
    loaded = load({"modules": {"softhsm": SOFTHSM}})
    assert loaded == OperatorConfig(modules={"softhsm": SOFTHSM})
    assert loaded.tokens == ()
    assert loaded.cluster_resource_namespace == "pkcs11-issuer"
    assert (loaded.concurrency, loaded.login_retry_interval) == (4, 300.0)
    assert loaded.key_cleanup_timeout == 3600.0
    assert (loaded.metrics_port, loaded.health_port) == (9402, 8081)


def test_an_empty_file_and_null_keys_mean_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("")
    assert OperatorConfig.load(path) == OperatorConfig()
    path.write_text("modules:\ntokens:\nconcurrency:\nmetrics:\n")
    assert OperatorConfig.load(path) == OperatorConfig()
    assert load({"modules": {}, "tokens": [], "metrics": {}, "health": {"port": None}}) == (
        OperatorConfig()
    )


def test_token_defaults() -> None:
    dev = load(MINIMAL).tokens[0]
    assert dev.pin == PinSource(
        secret_namespace="pkcs11-issuer", secret_name="hsm-pin", secret_key="pin"
    )
    assert dev.max_sessions == 8
    assert dev.grants == ()
    assert dev.uri.token == "dev-issuer"


def test_the_secret_namespace_defaults_to_the_cluster_resource_namespace() -> None:
    data = changed(lambda d: d.update(clusterResourceNamespace="hsm-system"))
    assert load(data).tokens[0].pin.secret_namespace == "hsm-system"
    token(data)["pin"]["secret"].update(namespace="vault", key="user-pin")
    assert load(data).tokens[0].pin == PinSource(
        secret_namespace="vault", secret_name="hsm-pin", secret_key="user-pin"
    )


def test_a_pin_file() -> None:
    data = changed(lambda d: token(d).update(pin={"file": "/etc/pkcs11-issuer/pin"}))
    assert load(data).tokens[0].pin == PinSource(file="/etc/pkcs11-issuer/pin")


def test_every_field_set() -> None:
    data = changed(
        lambda d: d.update(
            clusterResourceNamespace="hsm",
            concurrency=64,
            loginRetryInterval="1h30m",
            keyCleanupTimeout="0s",
            metrics={"port": 0},
            health={"port": 0},
        )
    )
    token(data).update(
        uri="pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=0a1b;"
        "slot-id=3;slot-description=x;slot-manufacturer=y;token=dev",
        maxSessions=256,
        grants=[
            {"namespaces": ["*"], "objects": ["shared/*", "{namespace}-{namespace}/?"]},
            {"namespaces": ["team-*", "ci-?"], "objects": ["*"]},
            {"namespaces": ["team-a"]},
        ],
    )
    loaded = load(data)
    assert (loaded.concurrency, loaded.login_retry_interval) == (64, 5400.0)
    assert loaded.key_cleanup_timeout == 0.0
    assert (loaded.metrics_port, loaded.health_port) == (0, 0)
    dev = loaded.tokens[0]
    assert dev.max_sessions == 256
    assert (dev.uri.serial, dev.uri.slot_id, dev.uri.model) == ("0a1b", 3, "SoftHSM v2")
    assert dev.grants == (
        Grant(("*",), ("shared/*", "{namespace}-{namespace}/?")),
        Grant(("team-*", "ci-?"), ("*",)),
        Grant(("team-a",), ("{namespace}/*",)),
    )


def test_token_lookup_by_name() -> None:
    data = changed(lambda d: d["tokens"].append({**TOKEN, "name": "ca", "uri": "pkcs11:token=ca"}))
    loaded = load(data)
    assert [t.name for t in loaded.tokens] == ["dev", "ca"]
    ca = loaded.token("ca")
    assert ca is not None and ca.uri.token == "ca"
    assert loaded.token("missing") is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(modul={}), "config.yaml: unknown key 'modul'; did you mean 'modules'?"),
        (lambda d: d.update(metrics={"prot": 1}), "metrics: unknown key 'prot'; did you mean"),
        (lambda d: d.update(health={"path": "/"}), "health: unknown key 'path'; expected port"),
        (lambda d: token(d).update(grant=[]), "tokens[0]: unknown key 'grant'; did you mean"),
        (lambda d: token(d).update(max_sessions=2), "tokens[0]: unknown key 'max_sessions'"),
        (
            lambda d: token(d).update(grants=[{"namespaces": ["a"], "object": ["x"]}]),
            "tokens[0].grants[0]: unknown key 'object'; did you mean 'objects'?",
        ),
        (
            lambda d: token(d)["pin"].update(files="/pin"),
            "tokens[0].pin: unknown key; expected secret, file",
        ),
        (
            lambda d: token(d)["pin"]["secret"].update(namspace="x"),
            "tokens[0].pin.secret: unknown key; expected name, key, namespace",
        ),
        (lambda d: d.update({1: 2}), "config.yaml: keys must be strings"),
    ],
)
def test_unknown_keys_are_refused_at_every_level(
    edit: Callable[[dict[str, Any]], object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(changed(edit))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(modules=["a"]), "modules: expected a mapping of module names"),
        (lambda d: d.update(modules={"x": "lib.so"}), "modules.x: expected an absolute path"),
        (lambda d: d.update(modules={"x": 3}), "modules.x: expected a non-empty string"),
        (lambda d: d.update(modules={3: "/x"}), "modules: module names must be non-empty"),
        (lambda d: d.update(tokens={"dev": {}}), "tokens: expected a list; got a mapping"),
        (lambda d: d.update(tokens=["dev"]), "tokens[0]: expected a mapping with keys name,"),
        (lambda d: token(d).pop("name"), "tokens[0].name: required"),
        (lambda d: token(d).update(name="Dev"), "tokens[0].name: 'Dev' is not a token name"),
        (lambda d: token(d).update(name="dev-"), "tokens[0].name: 'dev-' is not a token name"),
        (lambda d: token(d).update(name="a" * 64), "is not a token name"),
        (lambda d: token(d).update(name=5), "tokens[0].name: expected a non-empty string"),
        (
            lambda d: d["tokens"].append({**TOKEN, "uri": "pkcs11:token=other"}),
            "tokens[1].name: 'dev' is already the name of tokens[0]",
        ),
        (
            lambda d: d["tokens"].append({**TOKEN, "name": "again"}),
            "tokens[1].uri: selects the same token as tokens[0].uri",
        ),
        (lambda d: token(d).pop("module"), "tokens[0].module: required"),
        (
            lambda d: token(d).update(module="luna"),
            "tokens[0].module: 'luna' is not a name under `modules` (modules: softhsm)",
        ),
        (lambda d: token(d).pop("uri"), "tokens[0].uri: required"),
        (
            lambda d: token(d).update(uri="pkcs11:token=a b"),
            "tokens[0].uri: not a valid pkcs11: URI: position 14: a space must be",
        ),
        (
            lambda d: token(d).update(uri="pkcs11:token=a;object=k"),
            "tokens[0].uri: object= belongs to a key, but this URI selects a token",
        ),
        (lambda d: token(d).update(uri="pkcs11:id=%01"), "tokens[0].uri: id= belongs to a key"),
        (lambda d: token(d).update(uri="pkcs11:type=private"), "type= belongs to a key"),
        (
            lambda d: token(d).update(uri="pkcs11:library-version=2"),
            "tokens[0].uri: 'library-version' cannot select a token here; use only token,",
        ),
        (
            lambda d: token(d).update(uri="pkcs11:x-vendor=1"),
            "'x-vendor' cannot select a token here",
        ),
        (
            lambda d: token(d).update(uri="pkcs11:token=a?module-name=softhsm"),
            "tokens[0].uri: query attribute 'module-name' is not allowed here: the module comes "
            "from `module` and the PIN from `pin`",
        ),
        (lambda d: token(d).update(uri="pkcs11:token=%FF"), "tokens[0].uri: token is not UTF-8"),
        (lambda d: token(d).pop("pin"), "tokens[0].pin: required"),
        (lambda d: token(d).update(pin={}), "tokens[0].pin: give exactly one of secret"),
        (
            lambda d: token(d)["pin"].update(file="/etc/pin"),
            "tokens[0].pin: give exactly one of secret (a Kubernetes Secret) or file",
        ),
        (
            lambda d: token(d).update(pin={"file": "pin.txt"}),
            "tokens[0].pin.file: expected an absolute path",
        ),
        (
            lambda d: token(d).update(pin={"secret": {"key": "pin"}}),
            "tokens[0].pin.secret.name: required",
        ),
        (
            lambda d: token(d).update(pin={"secret": {"name": "Hsm_Pin"}}),
            "tokens[0].pin.secret.name: not a Secret name",
        ),
        (
            lambda d: token(d).update(pin={"secret": {"name": "p", "key": "a/b"}}),
            "tokens[0].pin.secret.key: not a Secret key",
        ),
        (
            lambda d: token(d).update(pin={"secret": {"name": "p", "namespace": "A"}}),
            "tokens[0].pin.secret.namespace: not a namespace name",
        ),
        (
            lambda d: token(d).update(pin={"secret": "hsm-pin"}),
            "tokens[0].pin.secret: expected a mapping with keys name, key, namespace; got a string",
        ),
        (lambda d: token(d).update(maxSessions=0), "tokens[0].maxSessions: expected a whole"),
        (lambda d: token(d).update(maxSessions=257), "from 1 to 256; got 257"),
        (lambda d: token(d).update(maxSessions=True), "from 1 to 256; got true/false"),
        (lambda d: token(d).update(maxSessions="8"), "from 1 to 256; got a string"),
        (lambda d: token(d).update(grants={}), "tokens[0].grants: expected a list"),
        (lambda d: token(d).update(grants=[{}]), "tokens[0].grants[0].namespaces: required"),
        (
            lambda d: token(d).update(grants=[{"namespaces": []}]),
            "tokens[0].grants[0].namespaces: expected a list of at least one entry",
        ),
        (
            lambda d: token(d).update(grants=[{"namespaces": "team-a"}]),
            "tokens[0].grants[0].namespaces: expected a list; got a string",
        ),
        (
            lambda d: token(d).update(grants=[{"namespaces": ["ok", "Team-*"]}]),
            "tokens[0].grants[0].namespaces[1]: 'Team-*' is not a namespace name or glob",
        ),
        (
            lambda d: token(d).update(grants=[{"namespaces": ["team-[ab]"]}]),
            "'team-[ab]' is not a namespace name or glob: lowercase letters, digits and '-', "
            "with '*' for any characters and '?' for any one",
        ),
        (
            lambda d: token(d).update(grants=[{"namespaces": ["a"], "objects": []}]),
            "tokens[0].grants[0].objects: expected a list of at least one entry",
        ),
        (
            lambda d: token(d).update(grants=[{"namespaces": ["a"], "objects": ["x", ""]}]),
            "tokens[0].grants[0].objects[1]: expected a non-empty string",
        ),
        (
            lambda d: token(d).update(grants=[{"namespaces": ["a"], "objects": ["{ns}/*"]}]),
            "tokens[0].grants[0].objects[0]: unknown placeholder '{ns}'; the only one is "
            "{namespace}",
        ),
        (
            lambda d: d.update(clusterResourceNamespace="Pkcs11"),
            "clusterResourceNamespace: 'Pkcs11' is not a namespace name",
        ),
        (lambda d: d.update(concurrency=0), "concurrency: expected a whole number from 1 to 64"),
        (lambda d: d.update(concurrency=65), "concurrency: expected a whole number"),
        (
            lambda d: d.update(loginRetryInterval=300),
            "loginRetryInterval: expected a duration such as 5m, 90s or 1h30m; got a number",
        ),
        (lambda d: d.update(loginRetryInterval="5 min"), "got '5 min'"),
        (lambda d: d.update(loginRetryInterval="0"), "loginRetryInterval: must be at least 1s"),
        (lambda d: d.update(loginRetryInterval="0.5s"), "must be at least 1s; got '0.5s'"),
        (
            lambda d: d.update(keyCleanupTimeout="-1m"),
            "keyCleanupTimeout: expected a duration such as 5m, 90s or 1h30m; got '-1m'",
        ),
        (lambda d: d.update(keyCleanupTimeout=30), "keyCleanupTimeout: expected a duration"),
        (lambda d: d.update(metrics=9402), "metrics: expected a mapping with keys port"),
        (lambda d: d.update(metrics={"port": 65536}), "metrics.port: expected a whole number"),
        (lambda d: d.update(health={"port": -1}), "health.port: expected a whole number from 0"),
        (
            lambda d: d.update(metrics={"port": 8080}, health={"port": 8080}),
            "health.port: 8080 is metrics.port too; give them different ports",
        ),
        (lambda d: d.clear() or d.update(x=1), "unknown key 'x'"),
        (lambda d: d.update(leaderElection=True), "leaderElection: expected a mapping"),
        (
            lambda d: d.update(leaderElection={"enabled": "yes"}),
            "leaderElection.enabled: expected true or false; got a string",
        ),
        (
            lambda d: d.update(leaderElection={"enabled": True, "lease": "x"}),
            "leaderElection: unknown key 'lease'; did you mean 'leaseName'?",
        ),
        (
            lambda d: d.update(leaderElection={"enabled": True, "leaseName": "A_b"}),
            "leaderElection.leaseName: 'A_b' is not a Lease name",
        ),
        (
            lambda d: d.update(leaderElection={"enabled": True, "renewDeadline": "15s"}),
            "leaderElection.renewDeadline: must be shorter than leaseDuration",
        ),
        (
            lambda d: d.update(leaderElection={"enabled": True, "retryPeriod": "10s"}),
            "leaderElection.retryPeriod: must be shorter than renewDeadline",
        ),
        (
            lambda d: d.update(leaderElection={"enabled": True, "retryPeriod": "500ms"}),
            "leaderElection.retryPeriod: must be at least 1s",
        ),
    ],
)
def test_every_refusal_names_its_place(
    edit: Callable[[dict[str, Any]], object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(changed(edit))
    assert message in str(caught.value)
    assert str(caught.value).startswith("config.yaml: ")


def test_leader_election_is_off_unless_enabled_and_defaults_like_client_go() -> None:
    assert load(MINIMAL).leader_election is None
    assert load({**MINIMAL, "leaderElection": {"enabled": False, "namespace": "x"}}) == (
        load(MINIMAL)
    )
    on = load({**MINIMAL, "clusterResourceNamespace": "ops", "leaderElection": {"enabled": True}})
    assert on.leader_election == LeaderElection(
        namespace="ops",
        lease_name="pkcs11-issuer",
        lease_duration=15.0,
        renew_deadline=10.0,
        retry_period=2.0,
    )


def test_the_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"^config.yaml: expected a mapping with keys modules"):
        load(["modules"])


def test_a_port_of_zero_disables_and_may_be_shared() -> None:
    loaded = load({"metrics": {"port": 0}, "health": {"port": 0}})
    assert (loaded.metrics_port, loaded.health_port) == (0, 0)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: token(d).update(pin=PIN_LIKE),
        lambda d: token(d).update(pin={"value": PIN_LIKE}),
        lambda d: token(d).update(pin={PIN_LIKE: None}),
        lambda d: token(d).update(pin={"file": PIN_LIKE}),
        lambda d: token(d).update(pin={"secret": {"name": PIN_LIKE}}),
        lambda d: token(d).update(pin={"secret": {"name": "p", "key": f"{PIN_LIKE}/"}}),
        lambda d: token(d).update(pin={"secret": {"name": "p", "namespace": PIN_LIKE}}),
        lambda d: token(d).update(pin={"secret": {"name": "p", "pin": PIN_LIKE}}),
        lambda d: token(d).update(uri=f"pkcs11:token=a?pin-value={PIN_LIKE}"),
        lambda d: token(d).update(uri=f"pkcs11:token=a?pin-value={PIN_LIKE}&&"),
        lambda d: token(d).update(uri=f"pkcs11:token=a?pin-value=1&{PIN_LIKE}"),
    ],
)
def test_a_pin_written_into_the_file_is_never_repeated(
    edit: Callable[[dict[str, Any]], object],
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(changed(edit))
    assert PIN_LIKE not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_pin_value_that_breaks_the_uri_hides_the_parser_details() -> None:
    data = changed(lambda d: token(d).update(uri="pkcs11:token=a?pin-value=12&34"))
    with pytest.raises(ConfigError) as caught:
        load(data)
    message = str(caught.value)
    assert "error at position 28; the details are not shown" in message
    assert "34" not in message


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            modules:
              softhsm: /usr/lib/softhsm/libsofthsm2.so
            tokens:
              - name: dev
                module: softhsm
                uri: "pkcs11:token=dev"
                pin: {file: /pin}
                grants:
                  - namespaces: [team-a]
                    objects: ["{namespace}/*"]
                    objects: ["*"]
            """
        )
    )
    with pytest.raises(ConfigError, match="found duplicate key 'objects' at line 11, column 9"):
        OperatorConfig.load(path)


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "metrics: &ports {port: 1}\nhealth:\n  <<: *ports\n  port: 2\n",
    )
    assert OperatorConfig.load(path).health_port == 2


def test_yaml_errors_give_the_place_but_not_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"modules: {{}}\ntokens:\n  - pin: '{PIN_LIKE}\n")
    with pytest.raises(ConfigError) as caught:
        OperatorConfig.load(path)
    message = str(caught.value)
    assert message.startswith(f"configuration {path} is not valid YAML: ")
    assert "line 4" in message
    assert PIN_LIKE not in message
    # The YAML error quoting the line is not chained in for a traceback to print.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read configuration .*No such file"):
        OperatorConfig.load(tmp_path / "missing.yaml")


def test_a_pin_source_is_exactly_one_thing() -> None:
    PinSource(file="/pin")
    PinSource(secret_namespace="ns", secret_name="n", secret_key="k")
    wrong: list[Callable[[], object]] = [
        PinSource,
        lambda: PinSource(secret_namespace="ns", secret_name="n", secret_key="k", file="/p"),
        lambda: PinSource(secret_name="n"),
    ]
    for build in wrong:
        with pytest.raises(ConfigError, match="exactly one of a Secret"):
            build()


def test_reprs_hold_no_pin_material() -> None:
    loaded = load(MINIMAL)
    assert "hsm-pin" in repr(loaded)  # where the PIN is, never what it is
    assert "pin-value" not in repr(loaded)
