"""SIGKILL the operator in the middle of issuing 50 Certificates, start it again: every
Certificate ends Ready with one Secret and one key, none lost and none duplicated."""

from __future__ import annotations

import json
import time

from test_operator_issuance import SELF_SIGNED, certificate

from support.operator_fixtures import Harness, condition

COUNT = 50


def test_sigkill_while_issuing_then_restart(operator: Harness, namespace: str) -> None:
    operator.apply(
        [SELF_SIGNED, *(certificate(f"c{i:02d}", "selfsigned") for i in range(COUNT))], namespace
    )

    def ready() -> int:
        out = operator.plane.kubectl(
            "get", "hsmcert", f"--namespace={namespace}", "-o", "json"
        ).stdout
        return sum(
            condition(item)["status"] == "True" if condition(item) else 0
            for item in json.loads(out)["items"]
        )

    operator.wait_for("some Certificates to be issued", lambda: ready() >= 5, timeout=120)
    operator.process.kill()
    killed_at = ready()
    assert killed_at < COUNT, "the kill came too late to interrupt anything"
    time.sleep(1)
    operator.process.start()
    operator.wait_for(f"{COUNT} Ready Certificates", lambda: ready() == COUNT, timeout=300)

    secrets = [operator.secret(namespace, f"c{i:02d}-tls") for i in range(COUNT)]
    assert all(secrets)
    keys = operator.keys(f"{namespace}/")
    assert len(keys) == COUNT, sorted(key.label for key in keys)
    uris = {s["data"]["tls.pkcs11-uri"] for s in secrets if s}
    assert len(uris) == COUNT


def test_a_restart_with_everything_ready_writes_and_signs_nothing(
    operator: Harness, namespace: str
) -> None:
    operator.apply(
        [SELF_SIGNED, *(certificate(f"r{i}", "selfsigned") for i in range(10))], namespace
    )
    for i in range(10):
        operator.wait_condition("Certificate", namespace, f"r{i}")

    def versions() -> dict[str, str]:
        found = {}
        for kind in ("hsmcert", "hsmissuer", "secret"):
            listing = operator.plane.kubectl(
                "get", kind, f"--namespace={namespace}", "-o", "json"
            ).stdout
            for item in json.loads(listing)["items"]:
                found[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
        return found

    before = versions()
    operator.process.stop()
    operator.process.start()
    # Every Certificate is reconciled right after the watch lists it; give that time to act.
    time.sleep(5)
    assert versions() == before
    issued_lines = [
        line
        for line in operator.process.metrics().splitlines()
        if line.startswith('pkcs11_issuer_issuances_total{result="issued"}')
    ]
    assert issued_lines == ['pkcs11_issuer_issuances_total{result="issued"} 0.0']
