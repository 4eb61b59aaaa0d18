"""Two replicas with leader election: one works, the other stands by and takes over when the
leader stops, dies, or loses its Lease; never both at once."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_operator_issuance import SELF_SIGNED, certificate

from pkcs11_issuer.dev.controlplane import ControlPlane, free_ports
from pkcs11_issuer.dev.operator import OperatorProcess, install_crds
from pkcs11_issuer.dev.softhsm import SoftHsm, softhsm_module
from support.hsm_fixtures import TEST_PIN
from support.operator_fixtures import MAIN_TOKEN, condition, resource_path
from support.waiting import wait_until

LEASE_DURATION = 4


class Replicas:
    def __init__(self, plane: ControlPlane, work: Path, softhsm: SoftHsm, namespace: str) -> None:
        self.plane = plane
        self.namespace = namespace
        module = softhsm_module()
        assert module is not None
        self.replicas: list[OperatorProcess] = []
        for index in range(2):
            health, metrics = free_ports(2)
            config = {
                "modules": {"softhsm": module},
                "clusterResourceNamespace": namespace,
                "tokens": [MAIN_TOKEN],
                "health": {"port": health},
                "metrics": {"port": metrics},
                "leaderElection": {
                    "enabled": True,
                    "leaseDuration": f"{LEASE_DURATION}s",
                    "renewDeadline": "3s",
                    "retryPeriod": "1s",
                },
            }
            path = work / f"config-{index}.yaml"
            path.write_text(yaml.safe_dump(config))
            self.replicas.append(
                OperatorProcess(
                    path,
                    kubeconfig=plane.kubeconfig_path,
                    env={
                        **softhsm.env(),
                        "POD_NAME": f"replica-{index}",
                        "PATH": os.environ.get("PATH", ""),
                    },
                    log_path=work / f"operator-{index}.log",
                    health_port=health,
                    metrics_port=metrics,
                )
            )

    def lease(self) -> dict[str, Any]:
        status, body = self.plane.request(
            "GET",
            f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/pkcs11-issuer",
        )
        assert status == 200, body
        return body

    def holder(self) -> str:
        return str(self.lease()["spec"].get("holderIdentity") or "")

    def leader(self) -> OperatorProcess:
        """The replica whose identity (POD_NAME_<suffix>) holds the Lease."""
        holder = self.holder()
        (leader,) = [r for r in self.replicas if holder.startswith(r.env["POD_NAME"] + "_")]
        return leader

    def logs(self) -> str:
        return "\n".join(f"--- {r.env['POD_NAME']}\n{r.log_tail(30)}" for r in self.replicas)


def wait_for(what: str, probe: Any, replicas: Replicas, timeout: float = 60.0) -> Any:
    return wait_until(what, probe, timeout, diagnostics=replicas.logs)


@pytest.fixture
def replicas(
    control_plane: ControlPlane, softhsm: SoftHsm, tmp_path: Path, namespace: str
) -> Iterator[Replicas]:
    install_crds(control_plane)
    control_plane.kubectl(
        "create", "secret", "generic", "main-pin", f"--from-literal=pin={TEST_PIN}",
        f"--namespace={namespace}",
    )  # fmt: skip
    group = Replicas(control_plane, tmp_path, softhsm, namespace)
    try:
        for replica in group.replicas:
            replica.start()  # a standby is ready too: it reaches the API server
        yield group
    finally:
        for replica in group.replicas:
            replica.stop()


def issue(replicas: Replicas, namespace: str, name: str) -> None:
    replicas.plane.kubectl(
        "apply", "-f", "-", f"--namespace={namespace}",
        input=yaml.safe_dump_all([SELF_SIGNED, certificate(name, "selfsigned")]),
    )  # fmt: skip

    def ready() -> bool:
        status, body = replicas.plane.request("GET", resource_path("Certificate", namespace, name))
        return status == 200 and condition(body).get("status") == "True"

    wait_for(f"Certificate {name} Ready", ready, replicas)


def issued_by(replica: OperatorProcess) -> float:
    for line in replica.metrics().splitlines():
        if line.startswith("pkcs11_issuer_issuances_total"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_one_replica_leads_and_the_other_takes_over_when_it_stops(
    replicas: Replicas, namespace: str
) -> None:
    leader = wait_for("a Lease holder", replicas.holder, replicas) and replicas.leader()
    (standby,) = [r for r in replicas.replicas if r is not leader]
    issue(replicas, namespace, "first")
    assert issued_by(leader) >= 1
    assert issued_by(standby) == 0, "the standby reconciled while another replica led"
    assert "standing by" in standby.log_tail(200)

    transitions = replicas.lease()["spec"].get("leaseTransitions", 0)
    stopped_at = time.monotonic()
    leader.stop()  # SIGTERM: the leader hands the Lease over as it goes
    wait_for(
        "the standby to take the Lease",
        lambda: replicas.holder().startswith(standby.env["POD_NAME"] + "_"),
        replicas,
    )
    # Released, not expired: the handover needs no leaseDuration of waiting.
    assert time.monotonic() - stopped_at < LEASE_DURATION + 2
    assert replicas.lease()["spec"]["leaseTransitions"] == transitions + 1
    issue(replicas, namespace, "second")
    assert issued_by(standby) >= 1


def test_a_killed_leader_is_replaced_once_its_lease_expires(
    replicas: Replicas, namespace: str
) -> None:
    wait_for("a Lease holder", replicas.holder, replicas)
    leader = replicas.leader()
    (standby,) = [r for r in replicas.replicas if r is not leader]
    leader.kill()  # no handover: the standby must wait out the Lease
    wait_for(
        "the standby to take the expired Lease",
        lambda: replicas.holder().startswith(standby.env["POD_NAME"] + "_"),
        replicas,
        timeout=LEASE_DURATION * 4,
    )
    issue(replicas, namespace, "after-kill")


def test_a_leader_that_loses_its_lease_stops_working(replicas: Replicas, namespace: str) -> None:
    wait_for("a Lease holder", replicas.holder, replicas)
    leader = replicas.leader()
    (standby,) = [r for r in replicas.replicas if r is not leader]
    standby.stop()
    # Someone else takes the Lease (a replica on a partitioned node, say): the leader can no
    # longer renew, and must stop within renewDeadline rather than work alongside it.
    intruder = f"intruder_{secrets.token_hex(4)}"
    lease = replicas.lease()
    lease["spec"]["holderIdentity"] = intruder
    lease["spec"]["leaseDurationSeconds"] = 3600
    status, body = replicas.plane.request(
        "PUT",
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/pkcs11-issuer",
        lease,
    )
    assert status == 200, body
    assert wait_for("the leader to exit", leader.exited, replicas, timeout=15) == "operator"
    assert leader.wait() == 1
    assert "could not renew Lease" in leader.log_tail(20)
    assert replicas.holder() == intruder
