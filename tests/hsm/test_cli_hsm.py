"""`pkcs11-issuer hsm check` and `keys` as a person runs them, in a process of their own."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pkcs11_issuer.hsm import ModuleAllowlist
from support.hsm_fixtures import DIRECT_LABEL, SIDECAR_LABEL, pin_file


@pytest.fixture
def config(tmp_path: Path, modules: ModuleAllowlist) -> Path:
    path = tmp_path / "config.yaml"
    lines = ["modules:"] + [f"  {name}: {modules.path_of(name)}" for name in modules]
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("pkcs11-issuer", path=str(Path(sys.executable).parent))
    assert executable, "pkcs11-issuer is installed into the virtualenv by `make test`"
    return subprocess.run(
        [executable, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def connection(config: Path, module: str, token: str, pin: Path) -> list[str | Path]:
    return [
        "--config",
        config,
        "--module",
        module,
        "--token-uri",
        f"pkcs11:token={token}",
        "--pin-file",
        pin,
    ]


@pytest.mark.parametrize(
    ("module", "label"), [("softhsm", DIRECT_LABEL), ("p11kit", SIDECAR_LABEL)]
)
def test_hsm_check_succeeds_directly_and_through_p11kit_server(
    config: Path, tmp_path: Path, module: str, label: str
) -> None:
    result = cli("hsm", "check", *connection(config, module, label, pin_file(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "login      ok" in result.stdout
    assert "sign       ok" in result.stdout and "verified" in result.stdout
    assert result.stdout.rstrip().endswith("result     OK")
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pin": "wrong-pin"}, "CKR_PIN_INCORRECT"),
        (
            {"token": "no-such-token"},
            "matches label='no-such-token' (tokens present: label='",
        ),
        ({"module": "luna"}, "module 'luna' is not in the operator's module allowlist"),
        ({"module": "/opt/nothing/libpkcs11.so"}, "file /opt/nothing/libpkcs11.so does not exist"),
    ],
)
def test_hsm_check_fails_with_one_clear_line(
    config: Path, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    pin = pin_file(tmp_path, change.get("pin", "test-user-pin"))
    args = connection(
        config, change.get("module", "softhsm"), change.get("token", DIRECT_LABEL), pin
    )
    result = cli("hsm", "check", *args)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and message in line
    if "tokens present" in message:
        assert f"label='{DIRECT_LABEL}'" in line  # the candidates are named
    assert "wrong-pin" not in result.stdout + result.stderr


def test_keys_generate_list_delete(config: Path, tmp_path: Path) -> None:
    args = connection(config, "softhsm", DIRECT_LABEL, pin_file(tmp_path))
    key_uri = "pkcs11:object=cli-key;id=%C1%01"
    generated = cli("keys", "generate", *args, "--key-uri", key_uri, "--algorithm", "RSA")
    assert generated.returncode == 0, generated.stderr
    assert "object=cli-key" in generated.stdout and "id=%C1%01" in generated.stdout
    again = cli("keys", "generate", *args, "--key-uri", key_uri)
    assert again.returncode == 1 and "already holds" in again.stderr
    listed = cli("keys", "list", *args)
    assert any(
        line.startswith("RSA-2048") and "object=cli-key" in line
        for line in listed.stdout.splitlines()
    )
    refused = cli("keys", "delete", *args, "--key-uri", key_uri)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    deleted = cli("keys", "delete", *args, "--key-uri", key_uri, "--yes")
    assert deleted.returncode == 0 and "(2 objects)" in deleted.stdout
    assert "object=cli-key" not in cli("keys", "list", *args).stdout


def test_pin_value_in_a_uri_is_refused_with_where_the_pin_belongs(
    config: Path, tmp_path: Path
) -> None:
    result = cli(
        "keys",
        "list",
        "--config",
        config,
        "--module",
        "softhsm",
        "--token-uri",
        f"pkcs11:token={DIRECT_LABEL}?pin-value=1234",
    )
    assert result.returncode == 1 and "--pin-file" in result.stderr and "1234" not in result.stderr
