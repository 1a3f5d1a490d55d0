"""After a promotion, roll the serving Deployment so that its pods pull the new champion: a
pod-template annotation naming the champion versions changes, and Kubernetes replaces the pods
as any rollout does (maxUnavailable 0, readiness first). The retrain job's ServiceAccount may
get and patch that one Deployment only (k8s/components/registry)."""

from __future__ import annotations

from typing import Any

ANNOTATION = "bentos.io/champion-{name}"


def patch_body(champions: dict[str, str]) -> dict[str, Any]:
    """The strategic-merge patch: one annotation per model name, its champion's version."""
    annotations = {ANNOTATION.format(name=name): version for name, version in champions.items()}
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


def roll(deployment: str, namespace: str, champions: dict[str, str], api_client: Any = None) -> Any:
    """Patch `deployment` in `namespace`; in a pod, with its ServiceAccount's token."""
    from kubernetes import client, config

    if api_client is None:
        config.load_incluster_config()
        api_client = client.ApiClient()
    return client.AppsV1Api(api_client).patch_namespaced_deployment(
        deployment,
        namespace,
        patch_body(champions),
        _content_type="application/strategic-merge-patch+json",
    )
