"""SoftHSM tokens for the tests, reached directly and through `p11-kit server` (the sidecar).

One SoftHSM configuration per test session: SoftHSM and p11-kit-client read their environment
once, when first initialised, so it is exported before any module is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkcs11_issuer.dev.p11kit import P11KitServer, p11kit_client_module
from pkcs11_issuer.dev.softhsm import SoftHsm, softhsm_module
from pkcs11_issuer.hsm import ModuleAllowlist, Pin, Token, TokenSelector
from support.tools import need_executable, unavailable

TEST_PIN = "test-user-pin"
DIRECT_LABEL = "test-direct"
SIDECAR_LABEL = "test-sidecar"
# A token no other fixture logs in to: PKCS#11 login state is per process and token, so
# wrong-PIN tests need a token nobody has logged in to yet.
GUARD_LABEL = "test-login-guard"

# The operator tests' tokens (support/operator_fixtures.py), label -> PIN. Every token of the
# session is made here, before any module is loaded: SoftHSM lists only the tokens that existed
# when it was initialised, so a token made later is invisible to this process.
OPERATOR_MAIN = "operator-main"
OPERATOR_RESTRICTED = "operator-restricted"
OPERATOR_GUARDED = "operator-guarded"
OPERATOR_SIDECAR = "operator-sidecar"
CLOUDHSM_LABEL = "cavium"
CLOUDHSM_PIN = "user:password"
KMS_LABEL = "edge-signing-key"  # aws-kms-pkcs11: the slot label is the key's
OPERATOR_TOKENS = {
    OPERATOR_MAIN: TEST_PIN,
    OPERATOR_RESTRICTED: TEST_PIN,
    OPERATOR_GUARDED: TEST_PIN,
    OPERATOR_SIDECAR: TEST_PIN,
    KMS_LABEL: TEST_PIN,
    CLOUDHSM_LABEL: CLOUDHSM_PIN,
}


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    if softhsm_module() is None:
        unavailable("the SoftHSM2 module", "apt-get install softhsm2 (or run `make test`)")
    need_executable("softhsm2-util", "apt-get install softhsm2 (or run `make test`)")
    hsm = SoftHsm.create(tmp_path_factory.mktemp("softhsm"))
    for label in (DIRECT_LABEL, SIDECAR_LABEL, GUARD_LABEL):
        hsm.init_token(label, TEST_PIN)
    for label, pin in OPERATOR_TOKENS.items():
        hsm.init_token(label, pin)
    os.environ.update(hsm.env())
    return hsm


@pytest.fixture(scope="session")
def p11kit_server(softhsm: SoftHsm) -> Iterator[P11KitServer]:
    need_executable("p11-kit", "apt-get install p11-kit (or run `make test`)")
    if p11kit_client_module() is None:
        unavailable("p11-kit-client.so", "apt-get install p11-kit-modules (or run `make test`)")
    module = softhsm_module()
    assert module is not None
    server = P11KitServer(
        module, f"pkcs11:token={SIDECAR_LABEL}", softhsm.root / "p11-kit.sock", softhsm.env()
    )
    with server:
        os.environ["P11_KIT_SERVER_ADDRESS"] = server.address
        yield server


@pytest.fixture(scope="session")
def modules(softhsm: SoftHsm, p11kit_server: P11KitServer) -> ModuleAllowlist:
    softhsm_path = softhsm_module()
    client_path = p11kit_client_module()
    assert softhsm_path is not None and client_path is not None
    return ModuleAllowlist({"softhsm": softhsm_path, "p11kit": client_path})


@pytest.fixture(scope="session", params=["softhsm", "p11kit"])
def token(request: pytest.FixtureRequest, modules: ModuleAllowlist) -> Iterator[Token]:
    """The same token API, directly on SoftHSM and through the p11-kit sidecar path."""
    label = DIRECT_LABEL if request.param == "softhsm" else SIDECAR_LABEL
    token = Token(modules.load(request.param), TokenSelector(label=label), Pin(TEST_PIN))
    yield token
    token.close()


@pytest.fixture
def key_name(request: pytest.FixtureRequest) -> tuple[bytes, str]:
    """A CKA_ID and CKA_LABEL unique to the test (and its parameters)."""
    name = request.node.name
    return name.encode()[-64:], name[-64:]


def pin_file(directory: Path, pin: str = TEST_PIN) -> Path:
    path = directory / "pin"
    path.write_text(pin + "\n")
    return path
