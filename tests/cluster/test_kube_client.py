"""KubeClient against the real API server, logged in the way the operator logs in: through kopf."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import ssl
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kopf
import pytest

from pkcs11_issuer.dev.controlplane import ControlPlane
from pkcs11_issuer.kube import ApiError, Conflict, KubeClient, NotFound, core_path, group_path

T = TypeVar("T")


def login(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> kopf.ConnectionInfo:
    # kopf's kubeconfig login takes no path: it reads $KUBECONFIG's current context.
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    return info


def run(
    info: kopf.ConnectionInfo,
    scenario: Callable[[KubeClient], Awaitable[T]],
    *,
    timeout: float = 30.0,
) -> T:
    async def main() -> T:
        async with KubeClient.from_connection(info, timeout=timeout) as client:
            return await scenario(client)

    return asyncio.run(main())


def events_about(plane: ControlPlane, namespace: str, uid: str) -> list[dict[str, Any]]:
    listed = json.loads(plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    return [event for event in listed["items"] if event["involvedObject"].get("uid") == uid]


def secret(name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


@pytest.fixture
def admin(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> kopf.ConnectionInfo:
    return login(control_plane.kubeconfig_path, monkeypatch)


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tempfile's directory for this test alone, so leftovers can be seen."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    yield directory


# --------------------------------------------------------------------------- paths, no server


def test_core_paths_follow_the_url_layout() -> None:
    assert core_path("namespaces") == "/api/v1/namespaces"
    assert core_path("secrets", "ns") == "/api/v1/namespaces/ns/secrets"
    assert core_path("secrets", "ns", "tls") == "/api/v1/namespaces/ns/secrets/tls"
    assert core_path("namespaces", name="ns", subresource="status") == (
        "/api/v1/namespaces/ns/status"
    )
    assert core_path("events", namespace="default") == "/api/v1/namespaces/default/events"


def test_group_paths_follow_the_url_layout() -> None:
    group = "pkcs11-issuer.io"
    assert group_path(group, "v1alpha1", "certificates", "ns", "web", "status") == (
        "/apis/pkcs11-issuer.io/v1alpha1/namespaces/ns/certificates/web/status"
    )
    assert group_path(group, "v1alpha1", "clusterissuers", name="root", subresource="status") == (
        "/apis/pkcs11-issuer.io/v1alpha1/clusterissuers/root/status"
    )
    assert group_path(group, "v1alpha1", "issuers") == "/apis/pkcs11-issuer.io/v1alpha1/issuers"


@pytest.mark.parametrize("name", ["", ".", "..", "../kube-system/secrets/x", "a/b", "a%2Fb"])
def test_paths_refuse_names_that_would_change_the_url(name: str) -> None:
    with pytest.raises(ValueError, match="segment"):
        core_path("secrets", "ns", name)
    with pytest.raises(ValueError, match="segment"):
        group_path("pkcs11-issuer.io", "v1alpha1", "certificates", name)


def test_a_subresource_needs_a_name() -> None:
    with pytest.raises(ValueError, match="needs an object name"):
        core_path("namespaces", subresource="status")


# --------------------------------------------------------------------------- against the server


def test_secret_create_read_update_patch_delete(admin: kopf.ConnectionInfo, namespace: str) -> None:
    collection = core_path("secrets", namespace)
    path = core_path("secrets", namespace, "tls")

    async def scenario(client: KubeClient) -> None:
        created = await client.create(collection, secret("tls", key="one"))
        assert created["metadata"]["namespace"] == namespace
        fetched = await client.get(path)
        assert fetched is not None
        assert fetched["data"] == {"key": base64.b64encode(b"one").decode()}
        assert fetched["kind"] == "Secret"

        with pytest.raises(Conflict) as taken:
            await client.create(collection, secret("tls", key="two"))
        assert (taken.value.status, taken.value.reason) == (409, "AlreadyExists")
        assert '"tls" already exists' in taken.value.message

        fetched["data"]["key"] = base64.b64encode(b"two").decode()
        replaced = await client.replace(path, fetched)
        assert replaced["metadata"]["resourceVersion"] != fetched["metadata"]["resourceVersion"]
        # `fetched` still carries the resourceVersion from before the replace.
        with pytest.raises(Conflict) as stale:
            await client.replace(path, fetched)
        assert (stale.value.status, stale.value.reason) == (409, "Conflict")

        merged = await client.patch(path, {"metadata": {"labels": {"merge": "yes"}}})
        assert merged["metadata"]["labels"] == {"merge": "yes"}
        patched = await client.patch(
            path,
            [{"op": "add", "path": "/metadata/annotations", "value": {"json": "yes"}}],
            kind="json",
        )
        assert patched["metadata"]["annotations"] == {"json": "yes"}
        strategic = await client.patch(
            path, {"metadata": {"labels": {"strategic": "yes"}}}, kind="strategic"
        )
        assert strategic["metadata"]["labels"] == {"merge": "yes", "strategic": "yes"}
        assert strategic["data"]["key"] == base64.b64encode(b"two").decode()

        await client.delete(path)
        assert await client.get(path) is None
        await client.delete(path)  # already gone: not an error
        with pytest.raises(NotFound) as missing:
            await client.replace(path, secret("tls", key="three"))
        assert (missing.value.status, missing.value.reason) == (404, "NotFound")
        assert '"tls" not found' in missing.value.message
        with pytest.raises(NotFound):
            await client.patch(path, {"metadata": {"labels": {"x": "y"}}})

    run(admin, scenario)


def test_delete_passes_the_propagation_policy(admin: kopf.ConnectionInfo, namespace: str) -> None:
    maps = core_path("configmaps", namespace)

    async def owned_pair(client: KubeClient, owner_name: str) -> str:
        owner = await client.create(maps, {"metadata": {"name": owner_name}})
        reference = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": owner_name,
            "uid": owner["metadata"]["uid"],
        }
        await client.create(
            maps, {"metadata": {"name": f"{owner_name}-dependent", "ownerReferences": [reference]}}
        )
        return core_path("configmaps", namespace, f"{owner_name}-dependent")

    async def settled(client: KubeClient, path: str) -> dict[str, Any] | None:
        """The object once the garbage collector is done with it (gone, or without owners)."""
        deadline = time.monotonic() + 30
        while (found := await client.get(path)) and found["metadata"].get("ownerReferences"):
            assert time.monotonic() < deadline, f"{path} still has owners"
            await asyncio.sleep(0.2)
        return found

    async def scenario(client: KubeClient) -> None:
        orphaned = await owned_pair(client, "orphaning")
        collected = await owned_pair(client, "collecting")
        await client.delete(core_path("configmaps", namespace, "orphaning"), propagation="Orphan")
        await client.delete(
            core_path("configmaps", namespace, "collecting"), propagation="Background"
        )
        assert await settled(client, orphaned) is not None
        assert await settled(client, collected) is None

    run(admin, scenario)


def test_list_follows_continue_tokens_and_completes_items(
    admin: kopf.ConnectionInfo, namespace: str
) -> None:
    collection = core_path("configmaps", namespace)

    async def scenario(client: KubeClient) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        await asyncio.gather(
            *(
                client.create(
                    collection,
                    {
                        "metadata": {
                            "name": f"map-{index}",
                            "labels": {"paged": "yes" if index < 7 else "no"},
                        }
                    },
                )
                for index in range(9)
            )
        )
        # Pages of 3 cannot hold 7 items: all 7 arriving proves the continue token was followed.
        selected = await client.list(collection, label_selector="paged=yes", page_size=3)
        everything = await client.list(collection, page_size=2)
        return selected, everything

    selected, everything = run(admin, scenario)
    assert sorted(item["metadata"]["name"] for item in selected) == [f"map-{i}" for i in range(7)]
    assert {(item["apiVersion"], item["kind"]) for item in selected} == {("v1", "ConfigMap")}
    names = {item["metadata"]["name"] for item in everything}
    assert {f"map-{i}" for i in range(9)} <= names


def test_status_subresource_patch(
    admin: kopf.ConnectionInfo, namespace: str, control_plane: ControlPlane
) -> None:
    condition = {"type": "KubeClientTest", "status": "True", "reason": "Patched"}

    def ours(body: dict[str, Any]) -> list[dict[str, Any]]:
        conditions = body["status"].get("conditions") or []
        return [c for c in conditions if c["type"] == "KubeClientTest"]

    async def scenario(client: KubeClient) -> dict[str, Any]:
        # Through the main resource the API server drops status changes; only /status takes them.
        await client.patch(
            core_path("namespaces", name=namespace), {"status": {"conditions": [condition]}}
        )
        ignored = await client.get(core_path("namespaces", name=namespace))
        assert ignored is not None
        assert ours(ignored) == []
        return await client.patch(
            core_path("namespaces", name=namespace, subresource="status"),
            {"status": {"conditions": [condition]}},
        )

    patched = run(admin, scenario)
    assert [c["reason"] for c in ours(patched)] == ["Patched"]
    stored = json.loads(control_plane.kubectl("get", "namespace", namespace, "-o", "json").stdout)
    assert [c["reason"] for c in ours(stored)] == ["Patched"]


def test_events_about_namespaced_and_cluster_scoped_objects(
    admin: kopf.ConnectionInfo, namespace: str, control_plane: ControlPlane
) -> None:
    long_message = "é" * 1000  # 2000 bytes: the API server would refuse it whole

    async def scenario(client: KubeClient) -> tuple[dict[str, Any], dict[str, Any]]:
        created = await client.create(core_path("secrets", namespace), secret("tls", key="k"))
        await client.post_event(
            created, type="Warning", reason="IssueFailed", message="the HSM said no"
        )
        await client.post_event(created, type="Normal", reason="Issued", message=long_message)
        namespace_object = await client.get(core_path("namespaces", name=namespace))
        assert namespace_object is not None
        await client.post_event(
            namespace_object, type="Normal", reason="Seen", message="cluster-scoped"
        )
        return created, namespace_object

    created, namespace_object = run(admin, scenario)

    events = {
        event["reason"]: event
        for event in events_about(control_plane, namespace, created["metadata"]["uid"])
    }
    assert set(events) == {"IssueFailed", "Issued"}
    failed = events["IssueFailed"]
    assert failed["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Secret",
        "name": "tls",
        "namespace": namespace,
        "uid": created["metadata"]["uid"],
        "resourceVersion": created["metadata"]["resourceVersion"],
    }
    assert failed["metadata"]["name"].startswith("tls.")
    assert (failed["type"], failed["message"], failed["count"]) == (
        "Warning",
        "the HSM said no",
        1,
    )
    assert failed["source"] == {"component": "pkcs11-issuer"}
    assert failed["reportingComponent"] == "pkcs11-issuer"
    assert failed["reportingInstance"] == socket.gethostname()
    assert failed["firstTimestamp"] == failed["lastTimestamp"]
    assert failed["eventTime"].startswith(failed["firstTimestamp"][:19])

    truncated = events["Issued"]["message"]
    assert truncated.endswith("...")
    assert len(truncated.encode()) <= 1024
    assert long_message.startswith(truncated.removesuffix("..."))

    # An involvedObject without namespace is what kubectl describe searches for.
    seen = events_about(control_plane, "default", namespace_object["metadata"]["uid"])
    assert [event["reason"] for event in seen] == ["Seen"]
    assert seen[0]["involvedObject"]["kind"] == "Namespace"
    assert "namespace" not in seen[0]["involvedObject"]


def test_client_certificate_data_is_on_disk_only_while_loaded(
    admin: kopf.ConnectionInfo,
    private_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The dev kubeconfig embeds the admin certificate; kopf passes it on as data, not a path.
    assert admin.certificate_data
    assert admin.private_key_data
    assert admin.certificate_path is None
    assert admin.private_key_path is None

    seen: list[tuple[int, int, int, bytes]] = []
    load_cert_chain = ssl.SSLContext.load_cert_chain

    def spy(
        context: ssl.SSLContext, certfile: Any, keyfile: Any = None, password: Any = None
    ) -> None:
        directory = Path(certfile).parent
        seen.append(
            (
                stat.S_IMODE(directory.stat().st_mode),
                stat.S_IMODE(os.stat(certfile).st_mode),
                stat.S_IMODE(os.stat(keyfile).st_mode),
                Path(keyfile).read_bytes()[:11],
            )
        )
        assert directory.parent == private_tmp
        load_cert_chain(context, certfile, keyfile, password)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)

    async def scenario() -> None:
        client = KubeClient.from_connection(admin)
        assert list(private_tmp.iterdir()) == []
        try:
            assert await client.get(core_path("namespaces", name="default")) is not None
        finally:
            await client.close()
        assert list(private_tmp.iterdir()) == []

    asyncio.run(scenario())
    assert seen == [(0o700, 0o600, 0o600, b"-----BEGIN ")]


def test_service_account_token_and_forbidden(
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    control_plane.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    control_plane.kubectl(
        "create", "role", "reader", "--verb=get", "--resource=configmaps", "-n", namespace
    )
    control_plane.kubectl(
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    control_plane.kubectl("create", "configmap", "settings", "--from-literal=a=b", "-n", namespace)
    info = login(
        control_plane.service_account_kubeconfig(namespace, "reader", tmp_path / "sa.kubeconfig"),
        monkeypatch,
    )
    assert info.token
    assert not info.certificate_data

    async def scenario(client: KubeClient) -> dict[str, Any] | None:
        path = core_path("configmaps", namespace, "settings")
        # The RBAC authorizer learns of the new RoleBinding through a watch: a moment's delay.
        deadline = time.monotonic() + 30
        while True:
            try:
                return await client.get(path)
            except ApiError as error:
                if error.status != 403 or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def forbidden(client: KubeClient) -> ApiError:
        with pytest.raises(ApiError) as refused:
            await client.create(core_path("configmaps", namespace), {"metadata": {"name": "x"}})
        # Events fail the same way, and are only logged.
        with caplog.at_level(logging.WARNING, logger="pkcs11_issuer.kube"):
            await client.post_event(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}},
                type="Normal",
                reason="Seen",
                message="not allowed",
            )
        return refused.value

    settings = run(info, scenario)
    assert settings is not None
    assert settings["data"] == {"a": "b"}

    error = run(info, forbidden)
    assert type(error) is ApiError
    assert (error.status, error.reason) == (403, "Forbidden")
    assert f'system:serviceaccount:{namespace}:reader" cannot create resource' in error.message
    assert "could not post Normal event Seen about ConfigMap" in caplog.text
    assert "Forbidden (403)" in caplog.text


def _reader_account(plane: ControlPlane, namespace: str, name: str) -> None:
    """ServiceAccount `name`, allowed to get configmaps in `namespace`, and one to get."""
    plane.kubectl("create", "serviceaccount", name, "-n", namespace)
    plane.kubectl("create", "role", name, "--verb=get", "--resource=configmaps", "-n", namespace)
    plane.kubectl(
        "create",
        "rolebinding",
        name,
        f"--role={name}",
        f"--serviceaccount={namespace}:{name}",
        "-n",
        namespace,
    )
    plane.kubectl("create", "configmap", "settings", "--from-literal=a=b", "-n", namespace)


async def _until(
    call: Callable[[], Awaitable[T]], *, retry_on: int | None, want: int | None = None
) -> T | ApiError:
    """`call()` until it stops failing with `retry_on` (a delay of the API server's caches).

    With `want`, the ApiError of that status is the awaited outcome instead of a result.
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            result = await call()
        except ApiError as error:
            if error.status == want:
                return error
            if error.status != retry_on or time.monotonic() > deadline:
                raise
        else:
            if want is None:
                return result
            assert time.monotonic() < deadline, f"still no HTTP {want}"
        await asyncio.sleep(0.2)


def test_relogin_after_401_refreshes_the_credentials_once(
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _reader_account(control_plane, namespace, "rotating")
    path = core_path("configmaps", namespace, "settings")
    stale = login(
        control_plane.service_account_kubeconfig(namespace, "rotating", tmp_path / "old"),
        monkeypatch,
    )
    relogins: list[kopf.ConnectionInfo] = []
    fresh_path = tmp_path / "fresh"

    def relogin() -> kopf.ConnectionInfo:
        # What runtime.login does in a Pod: read the (by now rotated) credentials again.
        relogins.append(login(fresh_path, monkeypatch))
        return relogins[-1]

    async def scenario() -> None:
        async with (
            KubeClient.from_connection(stale) as plain,
            KubeClient.from_connection(stale, relogin=relogin) as refreshing,
        ):
            # The RBAC authorizer learns of the new RoleBinding through a watch.
            assert await _until(lambda: plain.get(path), retry_on=403) is not None

            # Same name, new UID: the API server now refuses the old token, as it refuses an
            # expired one, once its token cache (10 s for a success) lets go of it.
            control_plane.kubectl("delete", "serviceaccount", "rotating", "-n", namespace)
            control_plane.kubectl("create", "serviceaccount", "rotating", "-n", namespace)
            refused = await _until(lambda: plain.get(path), retry_on=None, want=401)
            assert type(refused) is ApiError
            assert (refused.status, refused.reason) == (401, "Unauthorized")
            # Without relogin it stays that way.
            with pytest.raises(ApiError) as again:
                await plain.get(path)
            assert again.value.status == 401

            control_plane.service_account_kubeconfig(namespace, "rotating", fresh_path)
            with caplog.at_level(logging.DEBUG, logger="pkcs11_issuer.kube"):
                first, second = await asyncio.gather(refreshing.get(path), refreshing.get(path))
                third = await refreshing.get(path)
            for found in (first, second, third):
                assert found is not None
                assert found["data"] == {"a": "b"}

    asyncio.run(scenario())
    # Both requests got 401 with the old token; they shared one login, and the third call
    # already had the new token.
    relogin_count = len(relogins)  # not the list: a failure would print the tokens
    assert relogin_count == 1
    old_token, new_token = stale.token, relogins[0].token
    assert old_token
    assert new_token
    assert new_token != old_token
    assert "logged in again" in caplog.text
    # A JWT's last part is its signature: what makes it a credential.
    for token in (old_token, new_token):
        assert token.rsplit(".", 1)[-1] not in caplog.text


def test_a_401_after_relogin_is_an_api_error(
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _reader_account(control_plane, namespace, "revoked")
    stale = login(
        control_plane.service_account_kubeconfig(namespace, "revoked", tmp_path / "old"),
        monkeypatch,
    )
    path = core_path("configmaps", namespace, "settings")
    calls: list[str] = []

    def same_again() -> kopf.ConnectionInfo:
        # A token file the kubelet has not rotated yet: the same refused token.
        calls.append("same")
        return stale

    def broken() -> kopf.ConnectionInfo:
        calls.append("broken")
        raise kopf.LoginError("no credentials")

    async def scenario() -> tuple[ApiError, ApiError]:
        async with (
            KubeClient.from_connection(stale) as plain,
            KubeClient.from_connection(stale, relogin=same_again) as retrying,
            KubeClient.from_connection(stale, relogin=broken) as failing,
        ):
            assert await _until(lambda: plain.get(path), retry_on=403) is not None
            control_plane.kubectl("delete", "serviceaccount", "revoked", "-n", namespace)
            await _until(lambda: plain.get(path), retry_on=None, want=401)
            with pytest.raises(ApiError) as retried:
                await retrying.get(path)
            assert calls == ["same"]
            with (
                caplog.at_level(logging.WARNING, logger="pkcs11_issuer.kube"),
                pytest.raises(ApiError) as unrefreshed,
            ):
                await failing.get(path)
            assert calls == ["same", "broken"]
            # A later 401 is a new burst: it tries to log in again.
            with pytest.raises(ApiError):
                await retrying.get(path)
            assert calls == ["same", "broken", "same"]
            return retried.value, unrefreshed.value

    retried, unrefreshed = asyncio.run(scenario())
    for error in (retried, unrefreshed):
        assert type(error) is ApiError
        assert (error.status, error.reason) == (401, "Unauthorized")
    assert isinstance(unrefreshed.__cause__, kopf.LoginError)
    assert "logging in again failed: LoginError" in caplog.text


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_unreachable_server_fails_fast(caplog: pytest.LogCaptureFixture) -> None:
    info = kopf.ConnectionInfo(server=f"https://127.0.0.1:{_closed_port()}")

    async def scenario(client: KubeClient) -> ApiError:
        with pytest.raises(ApiError) as unreachable:
            await client.get(core_path("namespaces"))
        with caplog.at_level(logging.WARNING, logger="pkcs11_issuer.kube"):
            await client.post_event(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}},
                type="Warning",
                reason="Lost",
                message="no server",
            )
        return unreachable.value

    started = time.monotonic()
    error = run(info, scenario)
    assert time.monotonic() - started < 5
    assert (error.status, error.reason) == (0, "Unreachable")
    assert "GET https://127.0.0.1:" in error.message
    assert "Unreachable (0)" in caplog.text


def test_a_server_that_never_answers_times_out() -> None:
    # The kernel completes the TCP handshake for a listening socket nobody accepts on; the TLS
    # handshake then waits forever.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        info = kopf.ConnectionInfo(server=f"https://127.0.0.1:{silent.getsockname()[1]}")

        async def scenario(client: KubeClient) -> ApiError:
            with pytest.raises(ApiError) as timed_out:
                await client.get(core_path("namespaces"))
            return timed_out.value

        started = time.monotonic()
        error = run(info, scenario, timeout=0.5)
    assert time.monotonic() - started < 5
    assert (error.status, error.reason) == (0, "Unreachable")
