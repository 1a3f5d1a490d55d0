"""The retrain job's rollout (bentos.rollout): the exact request the Kubernetes client sends.

No Kubernetes API server can run here, so a recording HTTP server stands in for it
(tests/support/apiserver.py) and the request is checked as the API server would receive it; the
RBAC that allows it is rendered and validated in tests/k8s, and the rollout itself is
Kubernetes' job."""

from __future__ import annotations

from bentos.rollout import roll
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
