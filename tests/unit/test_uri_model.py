"""The Pkcs11Uri API that the hsm and controller layers build on."""

from __future__ import annotations

import dataclasses

import pytest

from pkcs11_issuer.uri import (
    OBJECT_TYPES,
    PATH_ATTRIBUTES,
    QUERY_ATTRIBUTES,
    Pkcs11Uri,
    UriError,
    parse,
)


def test_attribute_name_tables_follow_rfc_7512() -> None:
    assert PATH_ATTRIBUTES == (
        "token", "manufacturer", "serial", "model", "library-manufacturer",
        "library-description", "library-version", "slot-description", "slot-manufacturer",
        "slot-id", "object", "type", "id",
    )  # fmt: skip
    assert QUERY_ATTRIBUTES == ("pin-source", "pin-value", "module-name", "module-path")
    assert set(OBJECT_TYPES) == {"public", "private", "cert", "secret-key", "data"}


def test_build_a_key_reference() -> None:
    uri = Pkcs11Uri.build(
        token="Issuer CA", serial="0123456789abcdef", object="ca key", type="private",
        id=bytes.fromhex("a1b2"),
    )  # fmt: skip
    assert uri.format() == (
        "pkcs11:token=Issuer%20CA;serial=0123456789abcdef;object=ca%20key;type=private;id=%A1%B2"
    )
    assert parse(uri.format()) == uri


def test_build_every_standard_attribute_round_trips_through_the_properties() -> None:
    uri = Pkcs11Uri.build(
        token="t", manufacturer="m", serial="s", model="mo", library_manufacturer="lm",
        library_description="ld", library_version=(2, 40), slot_description="sd",
        slot_manufacturer="sm", slot_id=7, object="o", type="secret-key", id=b"\x00\xff",
        pin_source="file:/run/pin", module_name="softhsm2", module_path="/usr/lib/p.so",
    )  # fmt: skip
    assert [name for name, _ in uri.path] == list(PATH_ATTRIBUTES)
    assert [name for name, _ in uri.query] == ["pin-source", "module-name", "module-path"]
    again = parse(uri.format())
    assert (again.token, again.manufacturer, again.serial, again.model) == ("t", "m", "s", "mo")
    assert (again.library_manufacturer, again.library_description) == ("lm", "ld")
    assert again.library_version == (2, 40)
    assert (again.slot_description, again.slot_manufacturer, again.slot_id) == ("sd", "sm", 7)
    assert (again.object, again.type, again.id) == ("o", "secret-key", b"\x00\xff")
    assert (again.pin_source, again.module_name, again.module_path) == (
        "file:/run/pin", "softhsm2", "/usr/lib/p.so",
    )  # fmt: skip


def test_build_takes_label_bytes_and_id_text() -> None:
    uri = Pkcs11Uri.build(token=b"raw\xff", id="key-1")
    assert uri.get("token") == b"raw\xff"
    assert uri.id == b"key-1"


def test_build_checks_what_it_is_given() -> None:
    with pytest.raises(UriError, match="slot-id must be a decimal number"):
        Pkcs11Uri.build(slot_id=-1)
    with pytest.raises(UriError, match="one byte each"):
        Pkcs11Uri.build(library_version=(1, 256))
    with pytest.raises(UriError, match="unknown object type"):
        Pkcs11Uri.build(type="key")  # type: ignore[arg-type]
    with pytest.raises(UriError, match="exclude each other"):
        Pkcs11Uri.build(pin_source="file:/p", pin_value="1234")
    with pytest.raises(UriError, match="absolute path"):
        Pkcs11Uri.build(module_path="softhsm2.so")


def test_absent_attributes_read_as_none() -> None:
    uri = parse("pkcs11:")
    assert uri.path == () and uri.query == ()
    for reading in (
        uri.token, uri.manufacturer, uri.serial, uri.model, uri.library_manufacturer,
        uri.library_description, uri.library_version, uri.slot_description,
        uri.slot_manufacturer, uri.slot_id, uri.object, uri.type, uri.id, uri.pin_source,
        uri.pin_value, uri.module_name, uri.module_path,
    ):  # fmt: skip
        assert reading is None
    assert uri.get("token") is None


def test_numbers_read_as_numbers() -> None:
    uri = parse("pkcs11:slot-id=0042;library-version=01.007")
    assert uri.slot_id == 42
    assert uri.library_version == (1, 7)
    # The text is kept as written: canonical form does not renumber.
    assert uri.format() == "pkcs11:slot-id=0042;library-version=01.007"


def test_label_that_is_not_utf8_is_refused_as_text_but_readable_as_bytes() -> None:
    uri = parse("pkcs11:object=%FF%FE")
    with pytest.raises(UriError, match=r"not UTF-8 text; read its bytes with get\('object'\)"):
        _ = uri.object
    assert uri.get("object") == b"\xff\xfe"


def test_get_looks_in_the_path_then_the_query() -> None:
    uri = parse("pkcs11:x-v=path?x-v=query1&x-v=query2&pin-source=file:/p")
    assert uri.get("x-v") == b"path"
    assert uri.get("pin-source") == b"file:/p"
    assert parse("pkcs11:?x-v=query1&x-v=query2").get("x-v") == b"query1"


def test_with_path_replaces_in_place_appends_or_removes() -> None:
    uri = parse("pkcs11:token=a;object=k;id=%01")
    assert uri.with_path("object", "other").format() == "pkcs11:token=a;object=other;id=%01"
    assert (
        uri.with_path("type", "private").format() == "pkcs11:token=a;object=k;id=%01;type=private"
    )
    assert uri.with_path("object", None).format() == "pkcs11:token=a;id=%01"
    assert uri.with_path("missing", None) == uri
    with pytest.raises(UriError, match="unknown object type"):
        uri.with_path("type", "nope")


def test_with_query_leaves_one_value() -> None:
    uri = parse("pkcs11:token=a?x=1&pin-source=file:/p&x=2")
    assert uri.with_query("x", "3").format() == "pkcs11:token=a?x=3&pin-source=file:/p"
    assert uri.with_query("pin-source", None).format() == "pkcs11:token=a?x=1&x=2"
    assert uri.with_query("module-name", "softhsm2").query[-1] == ("module-name", b"softhsm2")
    with pytest.raises(UriError, match="exclude each other"):
        uri.with_query("pin-value", "1234")


def test_is_immutable_hashable_and_compared_by_attributes_in_order() -> None:
    uri = parse("pkcs11:token=a;object=b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        uri.path = ()  # type: ignore[misc]
    assert uri == parse("pkcs11:token=%61;object=b")
    assert uri != parse("pkcs11:object=b;token=a")
    assert len({uri, parse("pkcs11:token=%61;object=b")}) == 1


def test_str_is_the_canonical_form() -> None:
    uri = parse("pkcs11:token=%61%20b?pin-source=file%3A/p")
    assert str(uri) == uri.format() == "pkcs11:token=a%20b?pin-source=file:/p"


def test_repr_never_shows_a_pin() -> None:
    uri = parse("pkcs11:token=a?pin-value=s3cr3t&module-name=m")
    shown = repr(uri)
    assert "s3cr3t" not in shown
    assert shown == "Pkcs11Uri('pkcs11:token=a?pin-value=***&module-name=m')"
    assert "s3cr3t" not in f"{[uri]}"
    assert uri.pin_value == "s3cr3t"


def test_uri_error_carries_reason_and_position() -> None:
    error = UriError("bad thing", 3)
    assert (error.reason, error.position, str(error)) == ("bad thing", 3, "position 3: bad thing")
    assert str(UriError("bad thing")) == "bad thing"
