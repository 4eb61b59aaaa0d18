"""`pkcs11-issuer uri parse` as other tools drive it: a real process, stdout, stderr, exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pkcs11_issuer.uri import parse

# The console script installed next to the interpreter running the tests (.venv/bin).
CLI = Path(sys.executable).parent / "pkcs11-issuer"


def run(*args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: install the project into the venv (pip install -e .)")
    return subprocess.run(
        [os.fsencode(CLI), *(os.fsencode(a) if isinstance(a, str) else a for a in args)],
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_valid_uri_prints_one_json_object_and_exits_0() -> None:
    result = run(
        "uri",
        "parse",
        "pkcs11:token=My%20token;id=%01%02%Ab;object=k?pin-source=file%3A/run/pin&x-v=1&x-v=2",
    )
    assert result.returncode == 0
    assert result.stderr == b""
    assert result.stdout.endswith(b"\n")
    assert result.stdout.count(b"\n") == 1
    assert json.loads(result.stdout) == {
        "path": [["token", b"My token".hex()], ["id", "0102ab"], ["object", "6b"]],
        "query": [["pin-source", b"file:/run/pin".hex()], ["x-v", "31"], ["x-v", "32"]],
        "uri": "pkcs11:token=My%20token;id=%01%02%AB;object=k?pin-source=file:/run/pin&x-v=1&x-v=2",
    }


def test_hex_is_lowercase_and_of_the_decoded_bytes() -> None:
    document = json.loads(run("uri", "parse", "pkcs11:token=%FF%fe%00A").stdout)
    assert document["path"] == [["token", "fffe0041"]]


def test_empty_uri() -> None:
    document = json.loads(run("uri", "parse", "pkcs11:").stdout)
    assert document == {"path": [], "query": [], "uri": "pkcs11:"}


def test_canonical_uri_parses_back_to_the_same_attributes() -> None:
    given = "PKCS11:object=a%2fb;type=cert?module-path=%2Fusr%2Flib%2Fm.so"
    document = json.loads(run("uri", "parse", given).stdout)
    again = json.loads(run("uri", "parse", document["uri"]).stdout)
    assert again == document
    assert parse(document["uri"]) == parse(given)


@pytest.mark.parametrize(
    ("uri", "position"),
    [
        ("pkcs11:token=a;token=b", 15),
        ("pkcs11:type=key", 12),
        ("pkcs11:slot-id=one", 15),
        ("pkcs11:library-version=1.x", 25),
        ("pkcs11:token=%zz", 13),
        ("pkcs11:token=a b", 14),
        ("pkcs11:token", 7),
        ("pkcs11:?pin-value=1&pin-source=file:/p", 20),
        ("pkcs11:?module-path=softhsm2.so", 20),
        ("file:/etc/key.pem", 0),
    ],
)
def test_invalid_uri_exits_1_with_one_error_line_and_no_stdout(uri: str, position: int) -> None:
    result = run("uri", "parse", uri)
    assert result.returncode == 1
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error:")
    assert f"position {position}:" in lines[0]


def test_argument_bytes_that_are_not_utf8_are_an_error_not_a_crash() -> None:
    result = run("uri", "parse", b"pkcs11:token=\xff")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().startswith("error:")
    assert b"%FF" in result.stderr


def test_missing_argument_is_a_usage_error() -> None:
    result = run("uri", "parse")
    assert result.returncode == 2
    assert result.stdout == b""
    assert b"URI" in result.stderr
