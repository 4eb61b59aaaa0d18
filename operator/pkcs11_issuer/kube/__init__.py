"""The operator's own Kubernetes API calls: Secrets, status subresources and Events.

Public API:
- `KubeClient.from_connection(info)`: a client from the `kopf.ConnectionInfo` that
  `kopf.login_with_kubeconfig` or `kopf.login_with_service_account` returns; `get`, `list`,
  `create`, `replace`, `patch`, `delete` and `post_event`, each one API request (or one per
  page for `list`). With `relogin=` (a function returning a fresh `kopf.ConnectionInfo`), a
  401 logs in again once, shared by the requests refused together, and the request is retried
  once.
- `core_path(...)` and `group_path(...)`: the URL paths those methods take.
- `ApiError` and its `NotFound` (404) and `Conflict` (409); status 0 means unreachable.
"""

from pkcs11_issuer.kube.client import (
    ApiError,
    Conflict,
    KubeClient,
    NotFound,
    core_path,
    group_path,
)

__all__ = [
    "ApiError",
    "Conflict",
    "KubeClient",
    "NotFound",
    "core_path",
    "group_path",
]
