"""One real control plane for the whole session (`control_plane`), a fresh namespace for each
test (`namespace`), and the helm that comes with the Kubernetes binaries (`helm`): the cluster
and container tiers use them (registered in tests/conftest.py)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from pkcs11_issuer.dev.controlplane import (
    Binaries,
    BinariesMissing,
    ControlPlane,
    interrupt_on_termination,
    locate_binaries,
)
from support.helm import Helm
from support.tools import unavailable


@pytest.fixture(scope="session")
def cluster_binaries() -> Binaries:
    try:
        return locate_binaries()
    except BinariesMissing as error:
        unavailable(
            "the Kubernetes control-plane binaries",
            f"run `make k8s-binaries` (builds them from Go modules, ~15 min once)\n{error}",
        )
        raise AssertionError("unreachable") from error


@pytest.fixture(scope="session")
def helm(cluster_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The real helm, its cache, configuration and data away from the user's; not bound to a
    cluster (`helm.with_cluster(plane)` is)."""
    return Helm(cluster_binaries.helm, tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="session")
def control_plane(
    cluster_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    # SIGTERM (a CI job cancelled) becomes a KeyboardInterrupt, which pytest answers by
    # running this fixture's teardown, so the processes are stopped then too.
    with (
        interrupt_on_termination(),
        ControlPlane(tmp_path_factory.mktemp("control-plane"), cluster_binaries) as plane,
    ):
        yield plane


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    # Named after the test, so leftovers in a kept cluster say where they came from.
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"{slug}-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    # Some tests delete their namespace themselves, to watch the namespace controller work.
    control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
