"""The container tier: podman, and the project's images built once per session by
scripts/build-image.sh (cached by podman, so a second session takes seconds)."""

from __future__ import annotations

import os

import pytest

from support.podman import Images, Podman, remove_abandoned_pods
from support.tools import need_executable, unavailable

HOW_TO_GET_PODMAN = (
    "apt-get install podman runc debootstrap (or run `make test`, whose bootstrap installs them)"
)


@pytest.fixture(scope="session")
def podman() -> Podman:
    executable = need_executable("podman", HOW_TO_GET_PODMAN)
    if "CONTAINERS_CONF" not in os.environ:
        # scripts/podman/containers.conf chooses runc (crun fails on hybrid cgroups).
        need_executable("runc", HOW_TO_GET_PODMAN)
    podman = Podman(executable)
    remove_abandoned_pods(podman)
    return podman


@pytest.fixture(scope="session")
def images(podman: Podman) -> Images:
    result = podman.build_images()
    if result.returncode != 0:
        unavailable(
            "the container images",
            f"scripts/build-image.sh exited {result.returncode} (it needs root and debootstrap, "
            "or BASE_IMAGE naming a base image podman can pull); its output ends:\n"
            + "\n".join(result.stderr.splitlines()[-40:]),
        )
    names = result.stdout.split()
    assert len(names) == 2, f"scripts/build-image.sh printed {result.stdout!r}"
    return Images(operator=names[0], sidecar=names[1])
