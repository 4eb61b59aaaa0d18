"""`pkcs11-issuer createca`, run as a user runs it: a root and an intermediate from SoftHSM
(directly and through the p11-kit sidecar path), to files and to the token, checked by
`openssl verify`; refusals that leave no key behind; and a token that cannot store
certificate objects, as older AWS CloudHSM clusters cannot."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pkcs11_issuer.dev.softhsm import softhsm_module
from pkcs11_issuer.hsm import KeySpec, ModuleAllowlist, Pin, Token, TokenSelector
from pkcs11_issuer.hsm.errors import KeyNotFoundError
from pkcs11_issuer.uri import Pkcs11Uri
from pkcs11_issuer.x509 import CertificateProfile, Issuer, Subject, build_csr, hsm_private_key
from support.hsm_fixtures import DIRECT_LABEL, TEST_PIN, pin_file
from support.tools import need_executable, need_file

Run = Callable[..., subprocess.CompletedProcess[str]]


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("pkcs11-issuer", path=str(Path(sys.executable).parent))
    assert executable, "pkcs11-issuer is installed into the virtualenv by `make test`"
    return subprocess.run(
        [executable, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def openssl(*args: str | Path) -> str:
    binary = need_executable("openssl", "apt-get install openssl")
    result = subprocess.run([binary, *map(str, args)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"openssl {' '.join(map(str, args))}: {result.stderr}"
    return result.stdout


def succeeded(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def refused(result: subprocess.CompletedProcess[str], message: str) -> str:
    """The CLI's failure contract: exit 1, one line on stderr starting `error:`."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]
    return lines[0]


class Keys:
    """Key URIs for this test, one per role; everything made under them is deleted after."""

    def __init__(self, token: Token, key_name: tuple[bytes, str]) -> None:
        self.token = token
        self.key_id, self.label = key_name[0][-50:], key_name[1][-50:]
        self.ids: list[bytes] = []

    def id(self, role: str) -> bytes:
        key_id = self.key_id + b"/" + role.encode()
        self.ids.append(key_id)
        return key_id

    def label_of(self, role: str) -> str:
        return f"{self.label}/{role}"

    def uri(self, role: str, *, by: str = "both") -> str:
        key_id = self.id(role) if by in ("both", "id") else None
        label = self.label_of(role) if by in ("both", "object") else None
        return Pkcs11Uri.build(id=key_id, object=label).format()

    def clean(self) -> None:
        for key_id in self.ids:
            self.token.delete_certificates(id=key_id)
            self.token.delete_key(id=key_id)


@pytest.fixture
def keys(token: Token, key_name: tuple[bytes, str]) -> Iterator[Keys]:
    made = Keys(token, key_name)
    yield made
    made.clean()


@pytest.fixture
def createca(token: Token, modules: ModuleAllowlist, tmp_path: Path) -> Run:
    """`pkcs11-issuer createca` with the connection options for `token`, its module named in
    an operator configuration as in production."""
    config = tmp_path / "config.yaml"
    lines = ["modules:"] + [f"  {name}: {modules.path_of(name)}" for name in modules]
    config.write_text("\n".join(lines) + "\n")
    connection = (
        "--config",
        config,
        "--module",
        token.module.name,
        "--token-uri",
        f"pkcs11:token={token.info.label}",
        "--pin-file",
        pin_file(tmp_path),
    )
    return lambda *args: cli("createca", *connection, *args)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def write_pem(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def issue_leaf(token: Token, keys: Keys, ca_role: str, ca_pem: Path, out: Path) -> Path:
    """A leaf from the new CA through the library: the CA is usable, not just well-formed."""
    ca_key = hsm_private_key(token, token.find_key(label=keys.label_of(ca_role)))
    leaf_ref = token.generate_key(
        KeySpec.of("ECDSA", 256), id=keys.id("leaf"), label=keys.label_of("leaf")
    )
    profile = CertificateProfile(
        subject=Subject(common_name="leaf.example.com"), dns_names=("leaf.example.com",)
    )
    csr = build_csr(profile, hsm_private_key(token, leaf_ref))
    return write_pem(out, Issuer(load(ca_pem), ca_key).issue(csr, profile))


def test_root_and_intermediate_to_files_verify_as_a_chain(
    token: Token, keys: Keys, createca: Run, tmp_path: Path
) -> None:
    root_pem, intermediate_pem = tmp_path / "root.pem", tmp_path / "intermediate.pem"
    result = succeeded(
        createca(
            "--key-uri", keys.uri("root"), "--generate",
            "--common-name", "Example Root CA", "--org", "Example Ltd", "--org-unit", "PKI",
            "--country", "GB", "--province", "Greater London", "--locality", "London",
            "--street-address", "1 Example Road", "--postal-code", "N1 9GU",
            "--out", root_pem,
        )
    )  # fmt: skip
    assert result.stdout.startswith("created root CA CN=Example Root CA")
    assert f"written  {root_pem}" in result.stdout
    succeeded(
        createca(
            "--key-uri", keys.uri("intermediate"), "--generate",
            "--key-algorithm", "RSA", "--key-size", "2048",
            "--common-name", "Example Issuing CA", "--org", "Example Ltd",
            "--validity", "8760h",
            "--parent-key-uri", keys.uri("root", by="object"), "--parent-cert", root_pem,
            "--out", intermediate_pem,
        )
    )  # fmt: skip
    verified = openssl("verify", "-x509_strict", "-CAfile", root_pem, intermediate_pem)
    assert verified.strip() == f"{intermediate_pem}: OK"

    root_text = openssl("x509", "-in", root_pem, "-noout", "-text")
    assert "Signature Algorithm: ecdsa-with-SHA384" in root_text  # P-384 by default
    assert "CA:TRUE, pathlen:1" in root_text
    assert "X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign\n" in root_text
    subject = openssl("x509", "-in", root_pem, "-noout", "-subject", "-nameopt", "RFC2253")
    assert subject.strip() == (
        "subject=CN=Example Root CA,OU=PKI,O=Example Ltd,postalCode=N1 9GU,"
        "street=1 Example Road,L=London,ST=Greater London,C=GB"
    )
    intermediate_text = openssl("x509", "-in", intermediate_pem, "-noout", "-text")
    assert "Signature Algorithm: ecdsa-with-SHA384" in intermediate_text  # signed by the root
    assert "Public-Key: (2048 bit)" in intermediate_text
    assert "CA:TRUE, pathlen:0" in intermediate_text

    root, intermediate = load(root_pem), load(intermediate_pem)
    assert root.not_valid_after_utc - root.not_valid_before_utc == datetime.timedelta(days=3650)
    assert intermediate.not_valid_after_utc - intermediate.not_valid_before_utc == (
        datetime.timedelta(hours=8760)
    )
    assert token.find_certificates(id=keys.id("root")) == []  # --out only

    leaf_pem = issue_leaf(token, keys, "intermediate", intermediate_pem, tmp_path / "leaf.pem")
    chain = openssl("verify", "-CAfile", root_pem, "-untrusted", intermediate_pem, leaf_pem)
    assert chain.strip() == f"{leaf_pem}: OK"


def test_root_and_intermediate_stored_in_the_token_verify_as_a_chain(
    token: Token, keys: Keys, createca: Run, tmp_path: Path
) -> None:
    succeeded(
        createca("--key-uri", keys.uri("root"), "--generate", "--common-name", "Token Root",
                 "--store-in-token")
    )  # fmt: skip
    stored_root = token.find_certificates(id=keys.id("root"))
    assert [c.label for c in stored_root] == [keys.label_of("root")]
    root_pem = write_pem(tmp_path / "root.pem", x509.load_der_x509_certificate(stored_root[0].der))
    result = succeeded(
        createca(
            "--key-uri", keys.uri("intermediate"), "--generate", "--common-name", "Token Issuing",
            "--parent-key-uri", keys.uri("root", by="id"), "--parent-cert", root_pem,
            "--validity", "3651d", "--store-in-token",
        )
    )  # fmt: skip
    assert f"stored   on token {token.info.label!r}" in result.stdout
    stored = token.find_certificates(id=keys.id("intermediate"))
    assert [c.label for c in stored] == [keys.label_of("intermediate")]
    intermediate = x509.load_der_x509_certificate(stored[0].der)
    intermediate_pem = write_pem(tmp_path / "intermediate.pem", intermediate)
    verified = openssl("verify", "-x509_strict", "-CAfile", root_pem, intermediate_pem)
    assert verified.strip() == f"{intermediate_pem}: OK"
    key = token.find_key(id=keys.id("intermediate"))
    assert intermediate.public_key() == key.public_key
    # Longer than the root's ten years: the intermediate ends with its parent.
    assert intermediate.not_valid_after_utc == load(root_pem).not_valid_after_utc
    assert "validity clamped to the parent's end" in result.stdout

    again = createca(
        "--key-uri", keys.uri("intermediate", by="object"), "--common-name", "Token Issuing",
        "--parent-key-uri", keys.uri("root", by="id"), "--parent-cert", root_pem,
        "--store-in-token",
    )  # fmt: skip
    refused(again, "already holds a certificate")
    assert len(token.find_certificates(id=keys.id("intermediate"))) == 1


def test_an_existing_key_named_by_object_to_stdout(token: Token, keys: Keys, createca: Run) -> None:
    key = token.generate_key(
        KeySpec.of("RSA", 2048), id=keys.id("existing"), label=keys.label_of("existing")
    )
    result = succeeded(
        createca("--key-uri", keys.uri("existing", by="object"), "--org", "Example Ltd",
                 "--path-len", "none", "--rsa-pss", "--signature-hash", "sha384", "--out", "-")
    )  # fmt: skip
    certificate = x509.load_pem_x509_certificate(result.stdout.encode())
    assert certificate.public_key() == key.public_key
    assert result.stderr.startswith("created root CA O=Example Ltd")  # stdout is the PEM
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length is None
    assert certificate.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.10"  # PSS


REFUSALS: list[tuple[list[str], str]] = [
    (["--key-uri", "{id}", "--generate", "--out", "{out}"], "both id= and object="),
    (["--key-uri", "{both}", "--key-algorithm", "RSA", "--out", "{out}"], "only apply with"),
    (["--key-uri", "{both}", "--generate", "--parent-key-uri", "{both}", "--out", "{out}"],
     "needs both --parent-key-uri and --parent-cert"),
    (["--key-uri", "{both}", "--generate"], "--out FILE, --store-in-token"),
    (["--key-uri", "{both}", "--generate", "--validity", "30m", "--out", "{out}"],
     "shorter than the minimum of 1h0m0s"),
    (["--key-uri", "{both}", "--generate", "--validity", "ten years", "--out", "{out}"],
     "invalid duration"),
    (["--key-uri", "{both}", "--generate", "--rsa-pss", "--out", "{out}"],
     "--rsa-pss needs an RSA signing key"),
    (["--key-uri", "{both}", "--generate", "--country", "GBR", "--out", "{out}"], "two-letter"),
    (["--key-uri", "{both}", "--out", "{out}"], "no private key"),
    (["--key-uri", "pkcs11:token=elsewhere;object=x", "--out", "{out}"],
     "names another token"),
    (["--key-uri", "pkcs11:object=x?pin-value=1234", "--out", "{out}"],
     "pin-value is not accepted"),
    (["--key-uri", "{both}", "--generate", "--out", "/nonexistent/dir/ca.pem"],
     "cannot write in /nonexistent/dir"),
    (["--key-uri", "{both}", "--generate", "--key-algorithm", "RSA", "--key-size", "1024",
      "--out", "{out}"], "RSA key size 1024 is not supported"),
    ]  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS, ids=[message for _args, message in REFUSALS])
def test_refused_requests_leave_no_key(
    token: Token, keys: Keys, createca: Run, tmp_path: Path, case: tuple[list[str], str]
) -> None:
    args, message = case
    subject = [] if "--country" in args else ["--common-name", "Refused CA"]
    values = {"id": keys.uri("ca", by="id"), "both": keys.uri("ca"), "out": str(tmp_path / "x")}
    refused(createca(*[a.format(**values) for a in args], *subject), message)
    with pytest.raises(KeyNotFoundError):
        token.find_key(id=keys.id("ca"))
    assert not (tmp_path / "x").exists()


def test_a_ca_needs_a_subject(token: Token, keys: Keys, createca: Run, tmp_path: Path) -> None:
    refused(
        createca("--key-uri", keys.uri("ca"), "--generate", "--out", tmp_path / "ca.pem"),
        "a CA certificate needs a subject",
    )
    with pytest.raises(KeyNotFoundError):
        token.find_key(id=keys.id("ca"))


def test_parents_that_cannot_sign_are_refused_before_a_key_is_made(
    token: Token, keys: Keys, createca: Run, tmp_path: Path
) -> None:
    root_pem = tmp_path / "root.pem"
    succeeded(
        createca("--key-uri", keys.uri("root"), "--generate", "--key-algorithm", "ECDSA",
                 "--key-size", "256", "--common-name", "Leaf-only Root", "--path-len", "0",
                 "--out", root_pem)
    )  # fmt: skip
    other = token.generate_key(
        KeySpec.of("ECDSA", 256), id=keys.id("other"), label=keys.label_of("other")
    )
    leaf_pem = issue_leaf(token, keys, "root", root_pem, tmp_path / "leaf.pem")
    not_a_cert = tmp_path / "garbage.pem"
    not_a_cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    cases = [
        (keys.uri("root", by="object"), root_pem, "path length is 0"),
        (Pkcs11Uri.build(object=other.label).format(), root_pem, "is for another key"),
        (keys.uri("leaf", by="object"), leaf_pem, "is not a CA certificate"),
        (keys.uri("root", by="object"), not_a_cert, "not a certificate"),
    ]
    for parent_uri, parent_pem, message in cases:
        result = createca(
            "--key-uri", keys.uri("child"), "--generate", "--common-name", "Child CA",
            "--parent-key-uri", parent_uri, "--parent-cert", parent_pem,
            "--out", tmp_path / "child.pem",
        )  # fmt: skip
        refused(result, message)
        with pytest.raises(KeyNotFoundError):
            token.find_key(id=keys.id("child"))


# A PKCS#11 module in front of SoftHSM that refuses certificate objects, as a token without
# certificate storage (an hsm1 AWS CloudHSM cluster) does; everything else passes through.
NO_CERTIFICATES_MODULE = r"""
#include <dlfcn.h>
#include <stdlib.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST functions;
static CK_FUNCTION_LIST_PTR real;

static CK_RV create_object(CK_SESSION_HANDLE session, CK_ATTRIBUTE_PTR template,
                           CK_ULONG count, CK_OBJECT_HANDLE_PTR object) {
    for (CK_ULONG i = 0; i < count; i++)
        if (template[i].type == CKA_CLASS && template[i].ulValueLen == sizeof(CK_OBJECT_CLASS)
            && *(CK_OBJECT_CLASS *)template[i].pValue == CKO_CERTIFICATE)
            return CKR_ATTRIBUTE_VALUE_INVALID;
    return real->C_CreateObject(session, template, count, object);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
    if (real == NULL) {
        const char *path = getenv("NO_CERTIFICATES_WRAPS");
        void *handle = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
        CK_C_GetFunctionList get =
            handle ? (CK_C_GetFunctionList)dlsym(handle, "C_GetFunctionList") : NULL;
        if (get == NULL || get(&real) != CKR_OK)
            return CKR_GENERAL_ERROR;
        functions = *real;
        functions.C_CreateObject = create_object;
    }
    *list = &functions;
    return CKR_OK;
}
"""


@pytest.fixture(scope="module")
def no_certificates_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = need_executable("cc", "apt-get install gcc")
    need_file(
        "/usr/include/p11-kit-1/p11-kit/pkcs11.h",
        "the PKCS#11 header",
        "apt-get install libp11-kit-dev",
    )
    directory = tmp_path_factory.mktemp("no-certificates")
    source = directory / "no_certificates.c"
    source.write_text(NO_CERTIFICATES_MODULE)
    module = directory / "no_certificates.so"
    subprocess.run(
        [
            compiler,
            "-shared",
            "-fPIC",
            "-O2",
            "-I/usr/include/p11-kit-1",
            "-o",
            module,
            source,
            "-ldl",
        ],
        check=True,
    )
    return module


@pytest.fixture
def direct_token(modules: ModuleAllowlist) -> Iterator[Token]:
    token = Token(modules.load("softhsm"), TokenSelector(label=DIRECT_LABEL), Pin(TEST_PIN))
    yield token
    token.close()


def test_a_token_that_cannot_store_certificates_points_to_out(
    direct_token: Token,
    key_name: tuple[bytes, str],
    no_certificates_module: Path,
    tmp_path: Path,
) -> None:
    keys = Keys(direct_token, key_name)
    softhsm = softhsm_module()
    assert softhsm is not None
    connection = ("--module", no_certificates_module, "--token-uri", f"pkcs11:token={DIRECT_LABEL}",
                  "--pin-file", pin_file(tmp_path))  # fmt: skip

    def createca(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return cli("createca", *connection, *args, env={"NO_CERTIFICATES_WRAPS": softhsm})

    try:
        line = refused(
            createca("--key-uri", keys.uri("root"), "--generate", "--common-name", "No Storage",
                     "--store-in-token"),
            "cannot store certificate objects (CKR_ATTRIBUTE_VALUE_INVALID)",
        )  # fmt: skip
        assert "write the certificate to a file with --out FILE instead" in line
        assert "run again without --generate" in line
        # As told: the same key, to a file.
        root_pem = tmp_path / "root.pem"
        succeeded(
            createca("--key-uri", keys.uri("root", by="object"), "--common-name", "No Storage",
                     "--out", root_pem)
        )  # fmt: skip
        assert openssl("verify", "-CAfile", root_pem, root_pem).strip() == f"{root_pem}: OK"

        both_pem = tmp_path / "both.pem"
        line = refused(
            createca("--key-uri", keys.uri("both"), "--generate", "--common-name", "Both",
                     "--out", both_pem, "--store-in-token"),
            "cannot store certificate objects",
        )  # fmt: skip
        assert f"the certificate was written to {both_pem}" in line
        assert openssl("verify", "-CAfile", both_pem, both_pem).strip() == f"{both_pem}: OK"
        assert direct_token.find_certificates(id=keys.id("both")) == []
    finally:
        keys.clean()
