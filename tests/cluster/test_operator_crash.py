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
