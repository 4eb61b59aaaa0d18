"""What a custom resource may reach: URI refusals, token selection against live token facts,
grants per namespace, and the key labels a namespace may name."""

from __future__ import annotations

from typing import Any

import pytest

from pkcs11_issuer.config import OperatorConfig
from pkcs11_issuer.controller.policy import (
    KeyLocation,
    PolicyError,
    check_object,
    granted_tokens,
    locate,
)
from pkcs11_issuer.hsm.token import TokenInfo

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
P11KIT = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
PIN_LIKE = "S3cret-PIN"


def token(name: str, module: str, uri: str, *grants: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "module": module,
        "uri": uri,
        "pin": {"file": f"/pins/{name}"},
        "grants": list(grants),
    }


CONFIG = OperatorConfig.from_dict(
    {
        "modules": {"softhsm": SOFTHSM, "p11kit": P11KIT},
        "tokens": [
            token(
                "dev",
                "softhsm",
                "pkcs11:token=dev-issuer",
                {"namespaces": ["team-a", "team-b"]},
                {"namespaces": ["*"], "objects": ["shared/*"]},
            ),
            token("ca", "softhsm", "pkcs11:token=ca", {"namespaces": ["team-a"], "objects": ["*"]}),
            token("prod", "p11kit", "pkcs11:serial=2222"),
        ],
    }
)


def info(label: str, serial: str, slot_id: int, model: str = "SoftHSM v2") -> TokenInfo:
    return TokenInfo(
        label=label,
        serial=serial,
        manufacturer="SoftHSM project",
        model=model,
        slot_id=slot_id,
        slot_description=f"slot {slot_id}",
    )


INFOS: dict[str, TokenInfo | None] = {
    "dev": info("dev-issuer", "1111", 1),
    "ca": info("ca", "3333", 3),
    "prod": info("prod", "2222", 2, model="p11-kit"),
}


def refusal(
    uri: str,
    *,
    namespace: str | None = "team-a",
    infos: dict[str, TokenInfo | None] | None = None,
    config: OperatorConfig = CONFIG,
) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        locate(config, uri, namespace=namespace, infos=INFOS if infos is None else infos)
    assert caught.value.message == str(caught.value)
    return caught.value


def object_refusal(token: str, *, namespace: str, label: str | None) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        check_object(CONFIG, token, namespace=namespace, label=label)
    return caught.value


def found(
    uri: str, *, namespace: str | None = "team-a", infos: dict[str, TokenInfo | None] = INFOS
) -> KeyLocation:
    return locate(CONFIG, uri, namespace=namespace, infos=infos)


# -- what a URI may say -------------------------------------------------------------------------


def test_a_uri_that_does_not_parse_is_invalid_with_the_parsers_position() -> None:
    error = refusal("pkcs11:token=dev issuer")
    assert error.reason == "InvalidURI"
    assert error.message == (
        "the key URI is not a valid pkcs11: URI: position 16: a space must be percent-encoded "
        "as %20"
    )
    assert refusal("pkcs11:token=x;token=y").message.endswith(
        "duplicate path attribute 'token' (first at position 7)"
    )


def test_a_pin_that_breaks_the_uri_is_not_repeated() -> None:
    error = refusal(f"pkcs11:token=dev-issuer?pin-value={PIN_LIKE}&{PIN_LIKE}")
    assert error.reason == "InvalidURI"
    assert "position 45" in error.message and "pin-value" in error.message
    assert PIN_LIKE not in error.message


@pytest.mark.parametrize("attribute", ["pin-value", "pin-source"])
def test_a_pin_in_a_resource_is_not_allowed_and_not_repeated(attribute: str) -> None:
    error = refusal(f"pkcs11:token=dev-issuer;object=team-a%2Fk?{attribute}={PIN_LIKE}")
    assert error.reason == "NotAllowed"
    assert error.message == (
        f"{attribute} is not allowed in a resource: the PIN belongs in the Secret named by the "
        "operator configuration (tokens[].pin)"
    )
    # Even a PIN that is not UTF-8 text is refused as a PIN first.
    assert refusal(f"pkcs11:?{attribute}=%FF").reason == "NotAllowed"


def test_a_module_name_off_the_allowlist_is_not_allowed_and_paths_stay_unsaid() -> None:
    error = refusal("pkcs11:token=dev-issuer?module-name=evil")
    assert error.reason == "NotAllowed"
    assert error.message == (
        "module-name 'evil' is not on the operator's allowlist (allowlisted: softhsm, p11kit); "
        "only modules on the operator's allowlist are loaded; ask the operator admin"
    )
    assert SOFTHSM not in error.message and P11KIT not in error.message


def test_a_module_path_off_the_allowlist_is_not_allowed() -> None:
    for path in ("/tmp/evil.so", "/usr/lib/softhsm/../softhsm/libsofthsm2.so"):
        error = refusal(f"pkcs11:token=dev-issuer?module-path={path}")
        assert error.reason == "NotAllowed"
        assert error.message == (
            f"module-path {path!r} is not on the allowlist: only modules on the operator's "
            "allowlist are loaded; ask the operator admin"
        )
        assert SOFTHSM not in error.message


def test_an_allowlisted_module_path_is_accepted_and_narrows_the_tokens() -> None:
    assert found(f"pkcs11:token=dev-issuer?module-path={SOFTHSM}").token == "dev"
    assert found("pkcs11:token=dev-issuer?module-name=softhsm").token == "dev"
    assert found(f"pkcs11:?module-path={P11KIT}", namespace=None).token == "prod"
    assert found("pkcs11:?module-name=p11kit", namespace=None).token == "prod"
    both = f"pkcs11:serial=2222?module-name=p11kit&module-path={P11KIT}"
    assert found(both, namespace=None).token == "prod"
    error = refusal("pkcs11:token=dev-issuer?module-name=p11kit", namespace=None)
    assert error.reason == "TokenNotFound"
    assert "no token on module p11kit matches the URI (token=dev-issuer)" in error.message


def test_module_name_and_path_that_disagree_are_invalid() -> None:
    error = refusal(f"pkcs11:token=dev-issuer?module-name=p11kit&module-path={SOFTHSM}")
    assert error.reason == "InvalidURI"
    assert "module-name 'p11kit' and module-path" in error.message
    assert "name different modules: give only one of them" in error.message


@pytest.mark.parametrize("uri", ["pkcs11:token=dev-issuer;x-slot=1", "pkcs11:token=a?x-pin=1"])
def test_vendor_attributes_are_not_allowed(uri: str) -> None:
    error = refusal(uri)
    assert error.reason == "NotAllowed"
    assert error.message.startswith("unknown attribute 'x-")
    assert "refuses others rather than ignore them" in error.message


@pytest.mark.parametrize("kind", ["public", "cert", "secret-key", "data"])
def test_a_key_uri_names_a_private_key(kind: str) -> None:
    error = refusal(f"pkcs11:token=dev-issuer;type={kind}")
    assert error.reason == "InvalidURI"
    assert error.message == (
        f"type={kind} names a {kind} object, but a key URI names a private key: "
        "write type=private or leave type out"
    )
    assert found("pkcs11:token=dev-issuer;type=private").token == "dev"


@pytest.mark.parametrize(
    "attribute",
    [
        "library-manufacturer=SoftHSM",
        "library-description=x",
        "library-version=2.6",
        "slot-manufacturer=x",
    ],
)
def test_attributes_no_live_fact_answers_are_invalid_rather_than_ignored(attribute: str) -> None:
    error = refusal(f"pkcs11:token=dev-issuer;{attribute}")
    assert error.reason == "InvalidURI"
    assert error.message.startswith(
        f"{attribute.partition('=')[0]} cannot select a token here: use "
    )
    assert "token=, manufacturer=, serial=, model=, slot-id=, slot-description=" in error.message


def test_text_that_is_not_utf8_is_invalid() -> None:
    error = refusal("pkcs11:token=%FF")
    assert (error.reason, error.message) == (
        "InvalidURI",
        "token in the key URI is not UTF-8 text",
    )
    assert refusal("pkcs11:token=dev-issuer?module-name=%FF").reason == "InvalidURI"


# -- which token --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("pkcs11:token=dev-issuer", "dev"),
        ("pkcs11:serial=3333", "ca"),
        ("pkcs11:slot-id=1", "dev"),
        ("pkcs11:slot-description=slot%203", "ca"),
        ("pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=1111", "dev"),
        ("pkcs11:token=dev-issuer;serial=1111;slot-id=1", "dev"),
    ],
)
def test_every_token_attribute_given_must_match_the_live_token(uri: str, expected: str) -> None:
    assert found(uri).token == expected


def test_a_location_carries_the_key_id_and_label() -> None:
    location = found("pkcs11:token=dev-issuer;object=team-a%2Fweb;id=%01%02;type=private")
    assert location == KeyLocation(token="dev", id=b"\x01\x02", label="team-a/web")
    assert location.names_key
    assert KeyLocation("dev", b"\x01", None).names_key
    bare = found("pkcs11:token=dev-issuer")
    assert bare == KeyLocation("dev", None, None) and not bare.names_key


def test_labels_are_matched_case_sensitively() -> None:
    error = refusal("pkcs11:token=Dev-Issuer")
    assert error.reason == "TokenNotFound"


def test_nothing_matching_is_token_not_found_with_the_usable_tokens() -> None:
    error = refusal("pkcs11:token=nope;serial=9", namespace=None)
    assert error.reason == "TokenNotFound"
    assert error.message == (
        "no token matches the URI (token=nope, serial=9); tokens configured: "
        "dev (label 'dev-issuer'), ca (label 'ca'), prod (label 'prod'). "
        "Name one of them with token= or serial="
    )
    namespaced = refusal("pkcs11:token=nope", namespace="team-b")
    assert "tokens namespace team-b may use: dev (label 'dev-issuer')." in namespaced.message
    empty = OperatorConfig.from_dict({"modules": {"softhsm": SOFTHSM}})
    assert "tokens configured: none" in refusal("pkcs11:", config=empty, namespace=None).message


def test_more_than_one_match_is_invalid() -> None:
    error = refusal("pkcs11:manufacturer=SoftHSM%20project", namespace=None)
    assert error.reason == "InvalidURI"
    assert error.message == (
        "the URI matches tokens dev, ca, prod: add token= or serial= to choose one"
    )
    assert refusal("pkcs11:", namespace="team-a").message.startswith(
        "the URI matches tokens dev, ca:"
    )


def test_a_uri_without_token_attributes_takes_the_one_granted_token() -> None:
    assert found("pkcs11:", namespace="team-b").token == "dev"
    assert found("pkcs11:object=shared%2Froot", namespace="team-z").token == "dev"
    assert found("pkcs11:id=%01", namespace="team-b") == KeyLocation("dev", b"\x01", None)


def test_an_unreachable_token_that_may_be_meant_is_hsm_unavailable() -> None:
    down = {**INFOS, "dev": None}
    error = refusal("pkcs11:token=dev-issuer", infos=down)
    assert error.reason == "HsmUnavailable"
    assert error.message == (
        "token dev cannot be reached now, and so cannot be matched against the URI; this is retried"
    )
    # A token missing from `infos` is as unreachable as one reported None.
    missing = {"ca": INFOS["ca"]}
    assert refusal("pkcs11:serial=1111", infos=missing).reason == "HsmUnavailable"
    both = refusal("pkcs11:model=x", infos={}, namespace=None)
    assert both.message.startswith("tokens dev, ca, prod cannot be reached now")


def test_an_unreachable_token_its_configured_uri_rules_out_is_not_waited_for() -> None:
    down = {**INFOS, "dev": None}
    error = refusal("pkcs11:token=elsewhere", infos=down)
    assert error.reason == "TokenNotFound"
    assert "dev (unreachable), ca (label 'ca')" in error.message
    # Only tokens the namespace may use are waited for.
    assert refusal("pkcs11:serial=2222", infos={**INFOS, "prod": None}).reason == ("TokenNotFound")


def test_a_reachable_match_is_used_while_another_token_is_down() -> None:
    assert found("pkcs11:token=ca", infos={**INFOS, "dev": None}).token == "ca"


# -- grants -------------------------------------------------------------------------------------


def test_a_namespace_may_not_use_a_token_it_is_not_granted() -> None:
    error = refusal("pkcs11:serial=2222", namespace="team-a")
    assert (error.reason, error.message) == (
        "NotAllowed",
        "namespace team-a may not use token prod; the operator admin grants it under "
        "tokens[].grants",
    )
    other = refusal("pkcs11:token=ca", namespace="team-b")
    assert other.message.startswith("namespace team-b may not use token ca;")


def test_a_cluster_scoped_resource_reaches_every_token_and_key() -> None:
    assert found("pkcs11:serial=2222;object=anything", namespace=None).token == "prod"
    location = found("pkcs11:token=dev-issuer;object=team-b%2Fkey", namespace=None)
    assert location.label == "team-b/key"
    check_object(CONFIG, "prod", namespace=None, label="whatever")
    check_object(CONFIG, "dev", namespace=None, label=None)


def test_a_namespace_cannot_name_another_namespaces_key() -> None:
    assert found("pkcs11:token=dev-issuer;object=team-a%2Fweb").label == "team-a/web"
    error = refusal("pkcs11:token=dev-issuer;object=team-b%2Fweb", namespace="team-a")
    assert (error.reason, error.message) == (
        "NotAllowed",
        "key 'team-b/web' on token dev is not granted to namespace team-a "
        "(allowed: team-a/*, shared/*)",
    )


def test_namespace_substitution_in_object_patterns() -> None:
    check_object(CONFIG, "dev", namespace="team-b", label="team-b/web")
    check_object(CONFIG, "dev", namespace="team-b", label="team-b/sub/deeper")
    check_object(CONFIG, "dev", namespace="team-b", label="shared/root")
    for label in ("team-a/web", "team-b", "team-bb/web", "xteam-b/web", "Team-B/web"):
        with pytest.raises(PolicyError, match="not granted to namespace team-b"):
            check_object(CONFIG, "dev", namespace="team-b", label=label)


def test_object_labels_are_case_sensitive() -> None:
    error = refusal("pkcs11:token=dev-issuer;object=SHARED%2Froot", namespace="team-a")
    assert error.reason == "NotAllowed"
    assert "key 'SHARED/root' on token dev" in error.message


def test_a_star_grant_covers_every_namespace() -> None:
    check_object(CONFIG, "dev", namespace="team-z", label="shared/root")
    error = refusal("pkcs11:token=dev-issuer;object=team-z%2Fown", namespace="team-z")
    assert error.message.endswith("is not granted to namespace team-z (allowed: shared/*)")


def test_a_key_without_a_known_label_matches_only_a_bare_star() -> None:
    check_object(CONFIG, "ca", namespace="team-a", label=None)
    check_object(CONFIG, "ca", namespace="team-a", label="")
    error = object_refusal("dev", namespace="team-a", label=None)
    assert (error.reason, error.message) == (
        "NotAllowed",
        "a key without a label on token dev is not granted to namespace team-a "
        "(allowed: team-a/*, shared/*)",
    )
    # locate() leaves an id-only key to the caller, who checks its real label after lookup.
    assert found("pkcs11:token=dev-issuer;id=%07") == KeyLocation("dev", b"\x07", None)


def test_check_object_refuses_a_token_the_namespace_has_no_grant_on() -> None:
    error = object_refusal("prod", namespace="team-a", label="team-a/x")
    assert (error.reason, error.message) == (
        "NotAllowed",
        "namespace team-a may not use token prod; the operator admin grants it under "
        "tokens[].grants",
    )
    assert object_refusal("old", namespace="a", label="x").reason == "TokenNotFound"


def test_a_namespace_with_glob_characters_only_matches_itself() -> None:
    config = OperatorConfig.from_dict(
        {
            "modules": {"softhsm": SOFTHSM},
            "tokens": [token("dev", "softhsm", "pkcs11:token=dev", {"namespaces": ["*"]})],
        }
    )
    check_object(config, "dev", namespace="team-?", label="team-?/key")
    with pytest.raises(PolicyError, match="allowed: team-\\?/\\*"):
        check_object(config, "dev", namespace="team-?", label="team-a/key")


def test_namespace_globs_in_grants() -> None:
    config = OperatorConfig.from_dict(
        {
            "modules": {"softhsm": SOFTHSM},
            "tokens": [
                token("dev", "softhsm", "pkcs11:token=dev", {"namespaces": ["granted-*", "ci-?"]})
            ],
        }
    )
    assert granted_tokens(config, "granted-x1") == ["dev"]
    assert granted_tokens(config, "ci-1") == ["dev"]
    for outside in ("granted", "not-granted-x", "ci-12", "Granted-x"):
        assert granted_tokens(config, outside) == []
    check_object(config, "dev", namespace="granted-x1", label="granted-x1/key")
    infos: dict[str, TokenInfo | None] = {"dev": info("dev", "1", 1)}
    assert locate(config, "pkcs11:", namespace="granted-a", infos=infos).token == "dev"
    with pytest.raises(PolicyError, match="namespace other may not use token dev"):
        locate(config, "pkcs11:token=dev", namespace="other", infos=infos)


def test_granted_tokens_in_configuration_order() -> None:
    assert granted_tokens(CONFIG, None) == ["dev", "ca", "prod"]
    assert granted_tokens(CONFIG, "team-a") == ["dev", "ca"]
    assert granted_tokens(CONFIG, "team-b") == ["dev"]
    assert granted_tokens(CONFIG, "elsewhere") == ["dev"]
    assert granted_tokens(OperatorConfig(), "team-a") == []


def test_policy_errors_carry_a_reason_and_message() -> None:
    error = PolicyError("TokenNotFound", "no such token")
    assert (error.reason, error.message, str(error)) == (
        "TokenNotFound",
        "no such token",
        "no such token",
    )
