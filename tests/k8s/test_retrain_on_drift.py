"""The retrain-on-drift component (k8s/components/retrain-on-drift) as rendered: the monitor
pod's own account and token, its settings naming the retrain CronJob of its own namespace, a
Role allowing exactly the requests bentos.rollout sends, and the admission policy that limits
the one thing RBAC cannot: which Job that account may create.

No Kubernetes API server can run here. The requests are those the real `kubernetes` client sends
to a recording stand-in (tests/support/apiserver.py) holding the rendered CronJob; the policy's
CEL expressions are evaluated by cel-python (standard CEL: these expressions use no Kubernetes
library function) against the Job the monitor made, as the API server would hand them over.
Strict schema validation and checkov cover these objects in test_render.py and test_policy.py."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import celpy
import pytest

from bentos.rollout import start_from_cronjob
from bentos.settings import MonitorSettings, load
from tests.support.apiserver import api_server
from tests.support.k8s import (
    APP,
    OVERLAYS,
    api_request,
    container,
    find,
    includes_component,
    kustomization,
    one,
    pod_fields,
    pod_template,
    resolve_env,
    role_allows,
)

COMPONENT = "retrain-on-drift"
ACCOUNT = f"{APP}-monitor"
WITH = [o for o in OVERLAYS if includes_component(o, COMPONENT)]


@pytest.fixture(params=WITH)
def objects(request, rendered) -> list[dict]:
    return rendered[request.param]


def test_prod_lists_the_component_after_model_monitoring_and_dev_does_not():
    assert WITH == ["prod"]
    listed = [c.rsplit("/", 1)[-1] for c in kustomization("prod")["components"]]
    assert listed.index(COMPONENT) > listed.index("model-monitoring")


def _settings(objects: list[dict], monkeypatch) -> MonitorSettings:
    """The monitor's settings as its pod reads them (ConfigMaps, env, the downward API)."""
    monitor = one(objects, "CronJob", "monitor")
    env = resolve_env(objects, container(monitor), fields=pod_fields(monitor))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load(MonitorSettings)


def test_the_monitor_pod_starts_the_retrain_cronjob_of_its_own_namespace(objects, monkeypatch):
    monitor = one(objects, "CronJob", "monitor")
    spec = pod_template(monitor)["spec"]
    assert spec["serviceAccountName"] == ACCOUNT
    assert spec["automountServiceAccountToken"] is True
    settings = _settings(objects, monkeypatch)
    assert settings.retrain_on_drift is True
    retrain = one(objects, "CronJob", settings.retrain_cronjob)
    assert (
        settings.namespace == retrain["metadata"]["namespace"] == monitor["metadata"]["namespace"]
    )
    # The rest of the pod is as model-monitoring made it: hardened, the training image.
    ctr = container(monitor)
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["command"] == ["python", "-m", "jobs.monitor"]


def test_the_role_may_get_the_retrain_cronjob_and_create_jobs_and_nothing_else(objects):
    namespace = one(objects, "CronJob", "monitor")["metadata"]["namespace"]
    role = one(objects, "Role", ACCOUNT)
    binding = one(objects, "RoleBinding", ACCOUNT)
    assert role["rules"] == [
        {
            "apiGroups": ["batch"],
            "resources": ["cronjobs"],
            "resourceNames": ["retrain"],
            "verbs": ["get"],
        },
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
    ]
    assert binding["roleRef"]["name"] == ACCOUNT and binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}
    ]
    assert one(objects, "ServiceAccount", ACCOUNT)["automountServiceAccountToken"] is False
    users = [
        o["metadata"]["name"]
        for o in [*find(objects, "Deployment"), *find(objects, "CronJob")]
        if pod_template(o)["spec"]["serviceAccountName"] == ACCOUNT
    ]
    assert users == ["monitor"]


def _as_stored(cronjob: dict) -> dict:
    """The rendered CronJob as the API server returns it: with a uid (and a status)."""
    stored = copy.deepcopy(cronjob)
    stored["metadata"]["uid"] = "6f1e0c2a-5b7d-4c8e-9a10-3d2b1c0e9f87"
    stored["status"] = {}
    return stored


def _started(objects: list[dict], monkeypatch) -> tuple[list, dict, dict]:
    """What the monitor sends, with its own settings, to a stand-in holding the CronJob."""
    settings = _settings(objects, monkeypatch)
    cronjob = _as_stored(one(objects, "CronJob", settings.retrain_cronjob))
    with api_server() as server:
        server.cronjobs[(settings.namespace, settings.retrain_cronjob)] = cronjob
        result = start_from_cronjob(
            settings.retrain_cronjob,
            settings.namespace,
            "drift",
            datetime(2026, 12, 6, 2, 5, tzinfo=UTC),
            server.client(),
        )
    assert result["started"] is True, result
    (job,) = server.jobs.values()
    return server.requests, cronjob, job


def test_the_role_allows_exactly_the_requests_the_monitor_sends(objects, monkeypatch):
    requests, cronjob, _ = _started(objects, monkeypatch)
    role = one(objects, "Role", ACCOUNT)
    seen = [api_request(r.method, r.path) for r in requests]
    assert [(r["verb"], r["resource"]) for r in seen] == [("get", "cronjobs"), ("create", "jobs")]
    for request in seen:
        assert request["namespace"] == cronjob["metadata"]["namespace"]
        assert role_allows(role, **request), request
    get, create = seen
    # Nothing more: another CronJob, changing this one, or anything about pods and Secrets.
    assert not role_allows(role, **{**get, "name": "batch-predict"})
    for verb in ("update", "patch", "delete", "list", "watch", "create"):
        assert not role_allows(role, **{**get, "verb": verb}), verb
    for verb in ("get", "list", "delete", "patch"):
        assert not role_allows(role, **{**create, "verb": verb, "name": "x"}), verb
    for resource in ("pods", "secrets"):
        assert not role_allows(role, **{**create, "group": "", "resource": resource})


def _policy(objects: list[dict]) -> tuple[dict, dict]:
    (policy,) = find(objects, "ValidatingAdmissionPolicy")
    (binding,) = find(objects, "ValidatingAdmissionPolicyBinding")
    return policy, binding


def _admits(policy: dict, job: dict, params: dict, username: str) -> bool | None:
    """The policy's verdict on a Job create: None when its match conditions leave the request
    alone, else whether every validation holds. Evaluated as the API server does: `object`, the
    Job; `params`, the CronJob its binding names; `request`, the user and namespace."""
    env = celpy.Environment()
    context = {
        "object": celpy.json_to_cel(job),
        "params": celpy.json_to_cel(params),
        "request": celpy.json_to_cel(
            {"userInfo": {"username": username}, "namespace": job["metadata"]["namespace"]}
        ),
    }

    def holds(expression: str) -> bool:
        return bool(env.program(env.compile(expression)).evaluate(context))

    if not all(holds(c["expression"]) for c in policy["spec"]["matchConditions"]):
        return None
    return all(holds(v["expression"]) for v in policy["spec"]["validations"])


def test_the_policy_is_bound_to_the_retrain_cronjob_and_denies_what_fails(objects):
    policy, binding = _policy(objects)
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["paramRef"] == {"name": "retrain", "parameterNotFoundAction": "Deny"}
    assert "namespace" not in binding["spec"]["paramRef"]  # the request's own
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["paramKind"] == {"apiVersion": "batch/v1", "kind": "CronJob"}
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["resources"], rule["operations"]) == (
        ["batch"],
        ["jobs"],
        ["CREATE"],
    )


def test_the_policy_admits_the_job_the_monitor_makes_and_nothing_else_from_its_account(
    objects, monkeypatch
):
    _, cronjob, job = _started(objects, monkeypatch)
    policy, _ = _policy(objects)
    namespace = cronjob["metadata"]["namespace"]
    monitor = f"system:serviceaccount:{namespace}:{ACCOUNT}"
    assert _admits(policy, job, cronjob, monitor) is True

    def changed(edit) -> dict:
        tampered = copy.deepcopy(job)
        edit(tampered)
        return tampered

    pod = ("spec", "template", "spec")

    def at(obj: dict, path=pod) -> dict:
        for key in path:
            obj = obj[key]
        return obj

    refused = {
        "another account": lambda j: at(j).update(serviceAccountName=f"{APP}-jobs"),
        "another image": lambda j: at(j)["containers"][0].update(image="evil:latest"),
        "another command": lambda j: at(j)["containers"][0].update(command=["sh", "-c", "id"]),
        "a second container": lambda j: at(j)["containers"].append({"name": "x", "image": "y"}),
        "a host path": lambda j: at(j)["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "no owner": lambda j: j["metadata"].pop("ownerReferences"),
        "another owner": lambda j: j["metadata"]["ownerReferences"][0].update(uid="other"),
    }
    for what, edit in refused.items():
        assert _admits(policy, changed(edit), cronjob, monitor) is False, what
    # Other users' Jobs are not this policy's business: the CronJob controller's, a person's.
    for user in (
        "system:serviceaccount:kube-system:cronjob-controller",
        f"system:serviceaccount:{namespace}:{APP}-retrain",
        f"system:serviceaccount:another-namespace:{ACCOUNT}",
        "jane@example.com",
    ):
        assert _admits(policy, changed(refused["another image"]), cronjob, user) is None, user
