"""What the jobs ask of Kubernetes (bentos.rollout): the retrain job's rollout and the monitor's
start of the retrain CronJob, as the exact requests the Kubernetes client sends.

No Kubernetes API server can run here, so a recording HTTP server stands in for it
(tests/support/apiserver.py) and the request is checked as the API server would receive it; the
RBAC that allows it is rendered and validated in tests/k8s, and the rollout itself is
Kubernetes' job."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kubernetes.client.exceptions import ApiException

from bentos.rollout import roll, start_from_cronjob
from tests.support.apiserver import api_server


def test_a_promotion_patches_only_the_deployment_s_pod_template_annotations():
    with api_server() as server:
        roll(
            "tabular-classifier",
            "bentos",
            {"rf-classifier": "abc123", "tflite-classifier": "def456"},
            api_client=server.client(),
        )
    (request,) = server.requests
    assert request.method == "PATCH"
    assert request.path == "/apis/apps/v1/namespaces/bentos/deployments/tabular-classifier"
    assert request.content_type == "application/strategic-merge-patch+json"
    assert request.body == {
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        "bentos.io/champion-rf-classifier": "abc123",
                        "bentos.io/champion-tflite-classifier": "def456",
                    }
                }
            }
        }
    }


_CRONJOB = {
    "apiVersion": "batch/v1",
    "kind": "CronJob",
    "metadata": {"name": "retrain", "namespace": "bentos", "uid": "0b1c2d3e"},
    "spec": {
        "schedule": "0 1 1 * *",
        "jobTemplate": {
            "metadata": {"labels": {"app.kubernetes.io/component": "retrain"}},
            "spec": {
                "backoffLimit": 1,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "serviceAccountName": "tabular-classifier-retrain",
                        "containers": [{"name": "retrain", "image": "train:v1"}],
                    }
                },
            },
        },
    },
    "status": {},
}
_WHEN = datetime(2026, 12, 6, 2, 0, 30, tzinfo=UTC)


def test_a_drift_starts_the_retrain_cronjob_as_a_job_of_its_own_template():
    with api_server() as server:
        server.cronjobs[("bentos", "retrain")] = _CRONJOB
        result = start_from_cronjob("retrain", "bentos", "drift", _WHEN, server.client())
    get, post = server.requests
    assert (get.method, get.path) == ("GET", "/apis/batch/v1/namespaces/bentos/cronjobs/retrain")
    assert (post.method, post.path) == ("POST", "/apis/batch/v1/namespaces/bentos/jobs")
    job = post.body
    name = f"retrain-drift-{int(_WHEN.timestamp() // 60)}"
    assert result == {"cronjob": "retrain", "started": True, "job": name, "namespace": "bentos"}
    assert job["metadata"]["name"] == name
    assert job["spec"] == _CRONJOB["spec"]["jobTemplate"]["spec"]  # the pod the policy allows
    assert job["metadata"]["labels"] == {"app.kubernetes.io/component": "retrain"}
    assert job["metadata"]["annotations"] == {
        "cronjob.kubernetes.io/instantiate": "manual",
        "bentos.io/started-by": "drift",
    }
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner["kind"] == "CronJob" and owner["name"] == "retrain"
    assert owner["uid"] == "0b1c2d3e" and owner["controller"] is True


def test_a_running_retrain_is_not_started_twice():
    running = {**_CRONJOB, "status": {"active": [{"kind": "Job", "name": "retrain-29412345"}]}}
    with api_server() as server:
        server.cronjobs[("bentos", "retrain")] = running
        result = start_from_cronjob("retrain", "bentos", "drift", _WHEN, server.client())
    assert result == {"cronjob": "retrain", "started": False, "running": ["retrain-29412345"]}
    assert [r.method for r in server.requests] == ["GET"]


def test_a_retried_monitor_pod_finds_the_job_its_first_attempt_made():
    with api_server() as server:
        server.cronjobs[("bentos", "retrain")] = _CRONJOB
        first = start_from_cronjob("retrain", "bentos", "accuracy", _WHEN, server.client())
        again = start_from_cronjob("retrain", "bentos", "accuracy", _WHEN, server.client())
    assert first["started"] is True
    assert again == {"cronjob": "retrain", "started": False, "running": [first["job"]]}
    assert len(server.jobs) == 1


def test_a_missing_cronjob_is_an_error_not_a_silent_skip():
    with api_server() as server, pytest.raises(ApiException) as caught:
        start_from_cronjob("retrain", "bentos", "drift", _WHEN, server.client())
    assert caught.value.status == 404
