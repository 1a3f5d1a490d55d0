"""What the jobs ask of the Kubernetes API server, each with a ServiceAccount allowed that alone:

- after a promotion, the retrain job rolls the serving Deployment so that its pods pull the new
  champion: a pod-template annotation naming the champion versions changes, and Kubernetes
  replaces the pods as any rollout does (maxUnavailable 0, readiness first). Its Role may get
  and patch that one Deployment only (k8s/components/registry).
- on a confirmed drift or accuracy drop (`--retrain-on-drift`), the monitor starts the retrain
  CronJob now, as `kubectl create job --from=cronjob/retrain` does: a Job of the CronJob's own
  template, owned by it. Its Role may read that CronJob and create Jobs, and an admission policy
  refuses any Job of its whose pod is not the CronJob's (k8s/components/retrain-on-drift).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

ANNOTATION = "bentos.io/champion-{name}"
# kubectl's mark on a Job it made from a CronJob; the CronJob controller leaves such Jobs alone.
MANUAL = "cronjob.kubernetes.io/instantiate"
REASON = "bentos.io/started-by"


def patch_body(champions: dict[str, str]) -> dict[str, Any]:
    """The strategic-merge patch: one annotation per model name, its champion's version."""
    annotations = {ANNOTATION.format(name=name): version for name, version in champions.items()}
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


def roll(deployment: str, namespace: str, champions: dict[str, str], api_client: Any = None) -> Any:
    """Patch `deployment` in `namespace`; in a pod, with its ServiceAccount's token."""
    from kubernetes import client

    return client.AppsV1Api(api_client or _in_cluster()).patch_namespaced_deployment(
        deployment,
        namespace,
        patch_body(champions),
        _content_type="application/strategic-merge-patch+json",
    )


def job_from_cronjob(cronjob: dict[str, Any], name: str, reason: str) -> dict[str, Any]:
    """The Job `kubectl create job NAME --from=cronjob/...` makes: the CronJob's job template
    unchanged (the admission policy compares its pod with the CronJob's), owned by the CronJob
    so that deleting it deletes the Job, and marked with who started it and why."""
    template = cronjob["spec"]["jobTemplate"]
    meta = template.get("metadata") or {}
    owner = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": cronjob["metadata"]["name"],
        "uid": cronjob["metadata"]["uid"],
        "controller": True,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": cronjob["metadata"].get("namespace"),
            "labels": dict(meta.get("labels") or {}),
            "annotations": {**(meta.get("annotations") or {}), MANUAL: "manual", REASON: reason},
            "ownerReferences": [owner],
        },
        "spec": template["spec"],
    }


def start_from_cronjob(
    cronjob: str, namespace: str, reason: str, when: datetime, api_client: Any = None
) -> dict[str, Any]:
    """Start `cronjob` now as a Job, unless one of its Jobs is running already: what happened,
    for the summary. The Job's name is the CronJob's, the reason and the minute of `when`, so a
    retried monitor pod finds the Job its first attempt made (409) instead of starting two."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api_client = api_client or _in_cluster()
    batch = client.BatchV1Api(api_client)
    found = api_client.sanitize_for_serialization(
        batch.read_namespaced_cron_job(cronjob, namespace)
    )
    active = [ref["name"] for ref in (found.get("status") or {}).get("active") or []]
    if active:
        return {"cronjob": cronjob, "started": False, "running": active}
    name = f"{cronjob}-{reason}-{int(when.timestamp() // 60)}"
    try:
        batch.create_namespaced_job(namespace, job_from_cronjob(found, name, reason))
    except ApiException as exc:
        if exc.status != 409:  # 409: this run's Job exists (a retried pod made it first)
            raise
        return {"cronjob": cronjob, "started": False, "running": [name]}
    return {"cronjob": cronjob, "started": True, "job": name, "namespace": namespace}


def _in_cluster() -> Any:
    """An API client with the pod's ServiceAccount token; outside a pod, the kubeconfig's
    current context, as kubectl would (KUBECONFIG, ~/.kube/config)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()
