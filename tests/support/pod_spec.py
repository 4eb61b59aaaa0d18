"""A Kubernetes pod spec (the Helm chart's Deployment, as `helm template` renders it) turned into
`podman run` arguments, so the container tier runs the chart's own pod, not a copy of it.

The translation is generic and strict. Every field of the pod spec, of each container, of their
securityContexts, resources, env entries and volume mounts, and every volume type is either
translated or listed in an IGNORED table with the reason it means nothing to a podman pod on the
host network; anything else raises `UnsupportedPodSpec`, so a chart change cannot be silently
left out of the test.

What the kubelet would do, done on the host instead:

- every volume is a host directory under `root`, one per volume, shared by all the containers
  that mount it (as an emptyDir is): emptyDir empty; secret and configMap holding the object's
  keys as files (`items`, `defaultMode` and an item's `mode` respected), from the objects the
  caller passes (those applied to the API server) and always mounted read-only, as the kubelet
  mounts them; `subPath` and `readOnly` honoured;
- everything created there belongs to `owner` (the containers run without a user namespace);
- `valueFrom.fieldRef` env entries take the values the caller gives (`field_values`, e.g. the
  podman pod's name for metadata.name).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from support.podman import Pod


class UnsupportedPodSpec(AssertionError):
    """A field or volume type the translation does not handle: extend it, do not skip it."""


# Fields read below. Anything not in a TRANSLATED or IGNORED set is refused.
POD_TRANSLATED = {"containers", "volumes", "securityContext"}
POD_IGNORED = {
    "serviceAccountName": "podman has no API server identity: the caller mounts a kubeconfig",
    "automountServiceAccountToken": "no ServiceAccount token either: the kubeconfig stands in",
}
CONTAINER_TRANSLATED = {
    "name",
    "image",
    "command",
    "args",
    "env",
    "volumeMounts",
    "securityContext",
    "resources",
}
CONTAINER_IGNORED = {
    "imagePullPolicy": "the images are local, built for the test",
    "ports": "the pod is on the host network: nothing to publish",
    "livenessProbe": "podman does not probe: the test requests the same endpoints itself",
    "readinessProbe": "podman does not probe: the test requests the same endpoints itself",
}
SECURITY_CONTEXT_TRANSLATED = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "seccompProfile",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "capabilities",
}
POD_SECURITY_CONTEXT_TRANSLATED = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "seccompProfile",
    "fsGroup",
}
# The fields a container inherits from the pod's securityContext unless it sets them itself.
INHERITED = ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")
RESOURCES_IGNORED = {"requests": "requests only place a Pod on a node"}
VOLUME_MOUNT_TRANSLATED = {"name", "mountPath", "readOnly", "subPath"}
EMPTY_DIR_IGNORED = {
    "medium": "a host directory, on disk, whatever the medium",
    "sizeLimit": "a host directory, not limited in size",
}
EMPTY_DIR_MEDIA = {"", "Memory"}
PROJECTED_TRANSLATED = {"items", "defaultMode", "optional"}
ITEM_TRANSLATED = {"key", "path", "mode"}
DEFAULT_MODE = 0o644  # the kubelet's default for secret and configMap files
QUANTITY_SUFFIXES = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
}


def _only(where: str, obj: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise UnsupportedPodSpec(
            f"{where}: {', '.join(unknown)} not translated into podman arguments "
            f"(tests/support/pod_spec.py)"
        )


def _no_expansion(where: str, text: str) -> str:
    if "$(" in text:
        raise UnsupportedPodSpec(f"{where}: $(VAR) expansion is not translated: {text!r}")
    return text


def quantity_bytes(quantity: str | int) -> int:
    """A Kubernetes memory quantity (64Mi, 512M, 1Gi, 1048576) in bytes."""
    text = str(quantity)
    for suffix, factor in QUANTITY_SUFFIXES.items():
        if text.endswith(suffix) and text[: -len(suffix)].isdigit():
            return int(text[: -len(suffix)]) * factor
    if text.isdigit():
        return int(text)
    raise UnsupportedPodSpec(f"memory quantity {quantity!r} not translated")


@dataclass(frozen=True)
class Mount:
    host: Path
    path: str
    read_only: bool

    def volume(self) -> tuple[Path, str, str]:
        """As `Pod.run` takes it: (host path, container path, options)."""
        return (self.host, self.path, "ro" if self.read_only else "")


@dataclass
class Container:
    """One container of the pod spec as `podman run` arguments."""

    name: str
    image: str
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)

    def host_path(self, path: str) -> Path:
        """Where a path inside the container lives on the host, through the mount holding it."""
        inside = PurePosixPath(path)
        holding = [
            mount
            for mount in self.mounts
            if inside == PurePosixPath(mount.path) or PurePosixPath(mount.path) in inside.parents
        ]
        if not holding:
            raise AssertionError(f"{path} is on no volume of container {self.name}")
        mount = max(holding, key=lambda m: len(PurePosixPath(m.path).parts))
        return mount.host.joinpath(*inside.relative_to(mount.path).parts)

    def run(self, pod: Pod) -> str:
        return pod.run(
            self.name,
            self.image,
            volumes=[mount.volume() for mount in self.mounts],
            env=self.env,
            options=self.options,
            args=self.args,
        )


@dataclass
class _Volumes:
    """The pod's volumes as host directories, made once and shared by every container."""

    root: Path
    objects: Mapping[tuple[str, str], Mapping[str, Any]]
    owner: tuple[int, int] | None
    made: dict[str, tuple[Path, bool]] = field(default_factory=dict)

    def own(self, path: Path) -> None:
        if self.owner is not None:
            os.chown(path, *self.owner)

    def _directory(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True)
        self.own(path)
        return path

    def add(self, spec: Mapping[str, Any]) -> None:
        """Make the volume's host directory now, mounted or not, so that no volume type goes
        untranslated."""
        if spec["name"] in self.made:
            raise UnsupportedPodSpec(f"volume {spec['name']} is defined twice")
        self.made[spec["name"]] = self._make(spec["name"], spec)

    def host(self, name: str) -> tuple[Path, bool]:
        """The volume's host directory, and whether the kubelet always mounts it read-only."""
        if name not in self.made:
            raise UnsupportedPodSpec(f"a volumeMount names volume {name!r}, which is not one")
        return self.made[name]

    def _make(self, name: str, spec: Mapping[str, Any]) -> tuple[Path, bool]:
        where = f"volume {name}"
        sources = sorted(set(spec) - {"name"})
        if len(sources) != 1:
            raise UnsupportedPodSpec(f"{where}: expected one volume source, found {sources}")
        source = sources[0]
        settings: Mapping[str, Any] = spec[source] or {}
        if source == "emptyDir":
            _only(where, settings, EMPTY_DIR_IGNORED)
            if settings.get("medium", "") not in EMPTY_DIR_MEDIA:
                raise UnsupportedPodSpec(f"{where}: emptyDir medium {settings['medium']!r}")
            return self._directory(name), False
        if source == "secret":
            _only(where, settings, {"secretName", *PROJECTED_TRANSLATED})
            files = self._keys("Secret", settings["secretName"], settings, where)
        elif source == "configMap":
            _only(where, settings, {"name", *PROJECTED_TRANSLATED})
            files = self._keys("ConfigMap", settings["name"], settings, where)
        else:
            raise UnsupportedPodSpec(f"{where}: volume type {source} is not translated")
        directory = self._directory(name)
        for relative, (content, mode) in files.items():
            if ".." in PurePosixPath(relative).parts or PurePosixPath(relative).is_absolute():
                raise UnsupportedPodSpec(f"{where}: item path {relative!r}")
            path = directory / relative
            for parent in reversed(path.relative_to(directory).parents[:-1]):
                if not (directory / parent).exists():
                    (directory / parent).mkdir()
                    self.own(directory / parent)
            path.write_bytes(content)
            path.chmod(mode)
            self.own(path)
        return directory, True

    def _keys(
        self, kind: str, object_name: str, settings: Mapping[str, Any], where: str
    ) -> dict[str, tuple[bytes, int]]:
        """File name -> (content, mode), as the kubelet projects a Secret's or ConfigMap's keys."""
        obj = self.objects.get((kind, object_name))
        if obj is None:
            if settings.get("optional"):
                return {}
            raise UnsupportedPodSpec(f"{where}: no {kind} {object_name} among the given objects")
        if kind == "Secret":
            data = {key: base64.b64decode(value) for key, value in (obj.get("data") or {}).items()}
            data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
        else:
            data = {key: value.encode() for key, value in (obj.get("data") or {}).items()}
            for key, value in (obj.get("binaryData") or {}).items():
                data[key] = base64.b64decode(value)
        default_mode = int(settings.get("defaultMode", DEFAULT_MODE))
        if "items" not in settings:
            return {key: (value, default_mode) for key, value in data.items()}
        files = {}
        for item in settings["items"]:
            _only(f"{where} item", item, ITEM_TRANSLATED)
            if item["key"] not in data:
                if settings.get("optional"):
                    continue
                raise UnsupportedPodSpec(f"{where}: {kind} {object_name} has no key {item['key']}")
            files[item["path"]] = (data[item["key"]], int(item.get("mode", default_mode)))
        return files


def _security_options(
    where: str, pod_context: Mapping[str, Any], context: Mapping[str, Any]
) -> list[str]:
    _only(f"{where} securityContext", context, SECURITY_CONTEXT_TRANSLATED)
    merged = {key: pod_context[key] for key in INHERITED if key in pod_context} | dict(context)
    options = []
    user, group = merged.get("runAsUser"), merged.get("runAsGroup")
    if user is None and group is not None:
        raise UnsupportedPodSpec(f"{where}: runAsGroup without runAsUser")
    if merged.get("runAsNonRoot") and (user is None or int(user) == 0):
        raise UnsupportedPodSpec(f"{where}: runAsNonRoot needs a non-zero runAsUser here")
    if user is not None:
        options.append(f"--user={user}" + (f":{group}" if group is not None else ""))
    if "fsGroup" in pod_context:
        # The kubelet adds fsGroup to the processes' supplementary groups.
        options.append(f"--group-add={pod_context['fsGroup']}")
    seccomp = merged.get("seccompProfile")
    if seccomp is not None and seccomp != {"type": "RuntimeDefault"}:
        raise UnsupportedPodSpec(f"{where}: seccompProfile {seccomp} (only RuntimeDefault)")
    if merged.get("readOnlyRootFilesystem"):
        # Without --read-only-tmpfs=false podman would add writable /tmp, /var/tmp and /run:
        # only the pod spec's own volumes are writable, as in Kubernetes.
        options += ["--read-only", "--read-only-tmpfs=false"]
    if merged.get("allowPrivilegeEscalation") is False:
        options.append("--security-opt=no-new-privileges")
    capabilities = merged.get("capabilities") or {}
    _only(f"{where} capabilities", capabilities, {"drop", "add"})
    options += [f"--cap-drop={name}" for name in capabilities.get("drop") or ()]
    options += [f"--cap-add={name}" for name in capabilities.get("add") or ()]
    return options


def _resource_options(where: str, resources: Mapping[str, Any]) -> list[str]:
    _only(f"{where} resources", resources, {"limits", *RESOURCES_IGNORED})
    limits = resources.get("limits") or {}
    _only(f"{where} resources.limits", limits, {"memory"})
    if "memory" not in limits:
        return []
    limit = quantity_bytes(limits["memory"])
    # No swap on top, as under the kubelet.
    return [f"--memory={limit}", f"--memory-swap={limit}"]


def _env(
    where: str, entries: Iterable[Mapping[str, Any]], fields: Mapping[str, str]
) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in entries:
        name = entry["name"]
        if set(entry) == {"name", "value"}:
            env[name] = _no_expansion(f"{where} env {name}", str(entry["value"]))
        elif set(entry) == {"name", "valueFrom"} and set(entry["valueFrom"]) == {"fieldRef"}:
            reference = entry["valueFrom"]["fieldRef"]
            _only(f"{where} env {name} fieldRef", reference, {"fieldPath", "apiVersion"})
            if reference["fieldPath"] not in fields:
                raise UnsupportedPodSpec(
                    f"{where} env {name}: no value given for fieldRef {reference['fieldPath']}"
                )
            env[name] = fields[reference["fieldPath"]]
        else:
            raise UnsupportedPodSpec(f"{where} env {name}: {sorted(entry)} not translated")
    return env


def translate_pod(
    spec: Mapping[str, Any],
    *,
    objects: Iterable[Mapping[str, Any]],
    root: Path,
    field_values: Mapping[str, str],
    owner: tuple[int, int] | None,
) -> list[Container]:
    """The containers of pod spec `spec` (a Deployment's spec.template.spec), in its order,
    with their volumes made under `root` from `objects` (the Secrets and ConfigMaps in the
    pod's namespace) and owned by `owner` (uid, gid)."""
    _only("pod spec", spec, POD_TRANSLATED | POD_IGNORED.keys())
    pod_context = spec.get("securityContext") or {}
    _only("pod securityContext", pod_context, POD_SECURITY_CONTEXT_TRANSLATED)
    volumes = _Volumes(
        root,
        {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects},
        owner,
    )
    for volume in spec.get("volumes") or ():
        volumes.add(volume)

    containers = []
    for item in spec["containers"]:
        where = f"container {item['name']}"
        _only(where, item, CONTAINER_TRANSLATED | CONTAINER_IGNORED.keys())
        container = Container(item["name"], item["image"])
        container.env = _env(where, item.get("env") or (), field_values)
        for mount in item.get("volumeMounts") or ():
            _only(f"{where} volumeMount {mount['name']}", mount, VOLUME_MOUNT_TRANSLATED)
            host, always_read_only = volumes.host(mount["name"])
            if mount.get("subPath"):
                relative = PurePosixPath(mount["subPath"])
                if relative.is_absolute() or ".." in relative.parts:
                    raise UnsupportedPodSpec(f"{where}: subPath {mount['subPath']!r}")
                host = host.joinpath(*relative.parts)
                if not host.exists():  # the kubelet makes a missing subPath a directory
                    host.mkdir(parents=True)
                    volumes.own(host)
            read_only = always_read_only or bool(mount.get("readOnly"))
            container.mounts.append(Mount(host, mount["mountPath"], read_only))
        container.options += _security_options(
            where, pod_context, item.get("securityContext") or {}
        )
        container.options += _resource_options(where, item.get("resources") or {})
        if "command" in item:
            # As in Kubernetes, a command replaces the image's ENTRYPOINT and drops its CMD.
            command = [_no_expansion(f"{where} command", str(arg)) for arg in item["command"]]
            container.options.append(f"--entrypoint={json.dumps(command)}")
        # args replace the image's CMD (podman's arguments after the image, as in Kubernetes).
        container.args = [_no_expansion(f"{where} args", str(arg)) for arg in item.get("args", ())]
        containers.append(container)
    return containers
