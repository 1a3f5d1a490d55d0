"""The model registry component (k8s/components/registry) as rendered: prod lists it and dev
does not; its ConfigMap model-registry; the init container `pull-models` in the server pod and
in every batch pod, hardened as every container, filling the volume from which the servers and
the batch container read BENTOML_HOME; the retrain pod's registry, rollout target and
ServiceAccount; its RBAC, get and patch on the one Deployment, bound to that account alone, and
allowing exactly the request the rollout sends; and the two ways an overlay points it at its
own bucket. Strict schema validation and checkov cover these objects in test_render.py and
test_policy.py; running the init container's command is in test_workloads.py.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from tests.support.apiserver import api_server
from tests.support.k8s import (
    APP,
    K8S,
    OVERLAYS,
    PULL_MODELS,
    all_containers,
    api_request,
    config_map_data,
    container,
    deployment,
    find,
    includes_component,
    init_container,
    init_containers,
    kubectl,
    kustomization,
    one,
    pod_fields,
    pod_template,
    render,
    resolve_env,
    role_allows,
    server_container,
)

REGISTRY = K8S / "components" / "registry"
WITH_REGISTRY = [o for o in OVERLAYS if includes_component(o, "registry")]
WITHOUT_REGISTRY = [o for o in OVERLAYS if o not in WITH_REGISTRY]
RETRAIN_ACCOUNT = f"{APP}-retrain"
# The pods the init container runs in, and the containers there that open the pulled store.
PULLING = {
    ("Deployment", APP): ("server", "grpc"),
    ("CronJob", "batch-predict"): ("batch-predict",),
}


@pytest.fixture(params=WITH_REGISTRY)
def registry_objects(request, rendered) -> list[dict]:
    return rendered[request.param]


def _registry_map(objects: list[dict]) -> dict:
    (cm,) = [
        c for c in find(objects, "ConfigMap") if c["metadata"]["name"].startswith("model-registry-")
    ]
    return cm


def test_prod_lists_the_registry_component_and_dev_does_not():
    assert kustomization(REGISTRY)["kind"] == "Component"
    assert WITH_REGISTRY == ["prod"] and WITHOUT_REGISTRY == ["dev"]


@pytest.mark.parametrize("overlay_name", WITHOUT_REGISTRY)
def test_without_the_component_no_pod_pulls_and_the_grpc_container_keeps_its_own_home(
    rendered, overlay_name
):
    """The base as it was: the models are the image's, each server process has a home of its
    own, no registry, no RBAC."""
    objects = rendered[overlay_name]
    for obj in [*find(objects, "Deployment"), *find(objects, "CronJob")]:
        assert init_containers(obj) == [], obj["metadata"]["name"]
    grpc = container(deployment(objects), "grpc")
    assert {m["mountPath"]: m["name"] for m in grpc["volumeMounts"]}["/var/lib/bentoml"] == (
        "grpc-home"
    )
    assert not [c for c in find(objects, "ConfigMap") if "model-registry" in c["metadata"]["name"]]
    assert not find(objects, "Role") and not find(objects, "RoleBinding")
    assert not find(objects, "ServiceAccount", RETRAIN_ACCOUNT)


def test_the_model_registry_configmap_reaches_the_pulls_the_retrain_job_and_the_monitor_only(
    registry_objects,
):
    cm = _registry_map(registry_objects)
    assert re.fullmatch(r"model-registry-[a-z0-9]{10}", cm["metadata"]["name"])
    assert set(cm["data"]) == {"BENTOS_REGISTRY"}
    assert re.fullmatch(r"s3://[^/]+/.+/", cm["data"]["BENTOS_REGISTRY"])
    labels = cm["metadata"]["labels"]
    assert (
        labels["app.kubernetes.io/name"] == APP and labels["app.kubernetes.io/part-of"] == "bentos"
    )
    readers = {
        (obj["metadata"]["name"], ctr["name"])
        for obj in [*find(registry_objects, "Deployment"), *find(registry_objects, "CronJob")]
        for ctr in all_containers(obj)
        for source in ctr.get("envFrom") or []
        if source.get("configMapRef", {}).get("name") == cm["metadata"]["name"]
    }
    # With model-monitoring, the drift check pulls the logged versions from the registry too.
    monitor = {("monitor", "monitor")} if find(registry_objects, "CronJob", "monitor") else set()
    assert readers == {
        (APP, PULL_MODELS),
        ("batch-predict", PULL_MODELS),
        ("retrain", "retrain"),
        *monitor,
    }
    # The servers and the batch container read the pulled store, never the registry itself.
    for (kind, name), ctr_names in PULLING.items():
        obj = one(registry_objects, kind, name)
        for ctr_name in ctr_names:
            assert "BENTOS_REGISTRY" not in resolve_env(registry_objects, container(obj, ctr_name))


@pytest.mark.parametrize(("kind", "name"), list(PULLING))
def test_pull_models_runs_first_in_the_pod_with_the_serving_image_and_small_resources(
    registry_objects, kind, name
):
    obj = one(registry_objects, kind, name)
    assert [c["name"] for c in init_containers(obj)] == [PULL_MODELS]
    init = init_container(obj, PULL_MODELS)
    assert init["command"] == ["python", "-m", "bentos", "models", "pull"] and "args" not in init
    assert init["workingDir"] == "/home/bentoml/bento/src"
    # The serving image, the server's (test_render.py: the overlay's `tabular-classifier`).
    assert init["image"] == server_container(registry_objects)["image"]
    assert init["imagePullPolicy"] == "Always"
    env = resolve_env(registry_objects, init)
    assert env["BENTOML_DO_NOT_TRACK"] == "true" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["BENTOS_REGISTRY"] == _registry_map(registry_objects)["data"]["BENTOS_REGISTRY"]
    secrets = [s["secretRef"] for s in init["envFrom"] if "secretRef" in s]
    assert secrets == [{"name": "bentos-object-store", "optional": True}]
    assert init["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "500m", "memory": "512Mi"},
    }
    # An init container may have no probes, lifecycle or ports (the API server refuses them).
    assert not {"ports", "startupProbe", "readinessProbe", "livenessProbe", "lifecycle"} & set(init)


@pytest.mark.parametrize(("kind", "name"), list(PULLING))
def test_pull_models_is_hardened_as_the_containers_it_runs_beside(registry_objects, kind, name):
    """The same securityContext as the pod's own containers (checkov checks the fields one by
    one in test_policy.py; this checks nothing was left out or loosened)."""
    obj = one(registry_objects, kind, name)
    init = init_container(obj, PULL_MODELS)
    hardened = {
        "runAsNonRoot": True,
        "runAsUser": 1034,
        "runAsGroup": 1034,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert init["securityContext"] == hardened
    for ctr in pod_template(obj)["spec"]["containers"]:
        assert ctr["securityContext"] == hardened, ctr["name"]


@pytest.mark.parametrize(("kind", "name"), list(PULLING))
def test_pull_models_fills_the_volume_the_pod_s_containers_read_bentoml_home_from(
    registry_objects, kind, name
):
    obj = one(registry_objects, kind, name)
    volumes = {v["name"]: v for v in pod_template(obj)["spec"]["volumes"]}

    def home_volume(ctr: dict) -> tuple[str, str]:
        home = resolve_env(registry_objects, ctr)["BENTOML_HOME"]
        (mount,) = [m for m in ctr["volumeMounts"] if m["mountPath"] == home]
        assert not mount.get("readOnly") and "subPath" not in mount, (ctr["name"], mount)
        return home, mount["name"]

    home, volume = home_volume(init_container(obj, PULL_MODELS))
    assert "emptyDir" in volumes[volume] and volumes[volume]["emptyDir"]["sizeLimit"] == "1Gi"
    for ctr_name in PULLING[(kind, name)]:
        assert home_volume(container(obj, ctr_name)) == (home, volume), ctr_name
    # The archive is downloaded to /tmp first: a writable emptyDir there too.
    tmp = {m["mountPath"]: m["name"] for m in init_container(obj, PULL_MODELS)["volumeMounts"]}
    assert "emptyDir" in volumes[tmp["/tmp"]]
    # No volume left that nothing mounts (the base's grpc-home, in the server pod).
    mounted = {m["name"] for c in all_containers(obj) for m in c["volumeMounts"]}
    assert set(volumes) == mounted


def test_the_retrain_pod_reads_the_registry_and_rolls_the_deployment_of_its_own_namespace(
    registry_objects,
):
    cronjob = one(registry_objects, "CronJob", "retrain")
    spec = pod_template(cronjob)["spec"]
    assert spec["serviceAccountName"] == RETRAIN_ACCOUNT
    assert spec["automountServiceAccountToken"] is True
    ctr = container(cronjob)
    env = resolve_env(registry_objects, ctr, fields=pod_fields(cronjob))
    assert env["BENTOS_REGISTRY"] == _registry_map(registry_objects)["data"]["BENTOS_REGISTRY"]
    assert (
        env["BENTOS_RETRAIN_ROLLOUT_DEPLOYMENT"] == deployment(registry_objects)["metadata"]["name"]
    )
    (item,) = [e for e in ctr["env"] if e["name"] == "BENTOS_RETRAIN_ROLLOUT_NAMESPACE"]
    assert item == {
        "name": "BENTOS_RETRAIN_ROLLOUT_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    }
    assert (
        env["BENTOS_RETRAIN_ROLLOUT_NAMESPACE"]
        == deployment(registry_objects)["metadata"]["namespace"]
    )
    # The base's envFrom is kept (the JSON patch appends): its settings, then the Secret.
    refs = [next(iter(s.values()))["name"] for s in ctr["envFrom"]]
    assert refs[0].startswith("retrain-config-") and "bentos-object-store" in refs
    # Hardened as before: only the account and its token changed.
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_retrain_role_allows_get_and_patch_on_the_one_deployment_only(registry_objects):
    namespace = deployment(registry_objects)["metadata"]["namespace"]
    role = one(registry_objects, "Role", RETRAIN_ACCOUNT)
    binding = one(registry_objects, "RoleBinding", RETRAIN_ACCOUNT)
    assert not find(registry_objects, "ClusterRole") and not find(
        registry_objects, "ClusterRoleBinding"
    )
    assert role["metadata"]["name"] == RETRAIN_ACCOUNT
    assert role["metadata"]["namespace"] == namespace
    assert role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": [deployment(registry_objects)["metadata"]["name"]],
            "verbs": ["get", "patch"],
        }
    ]
    assert binding["metadata"]["namespace"] == namespace
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": RETRAIN_ACCOUNT, "namespace": namespace}
    ]
    account = one(registry_objects, "ServiceAccount", RETRAIN_ACCOUNT)
    assert account["automountServiceAccountToken"] is False  # the retrain pod asks for it
    for obj in (role, binding, account):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == APP, obj["kind"]
        assert labels["app.kubernetes.io/component"] == "retrain", obj["kind"]
        assert labels["app.kubernetes.io/part-of"] == "bentos", obj["kind"]
    # The retrain pod is the only one under the bound account.
    users = {
        obj["metadata"]["name"]
        for obj in [*find(registry_objects, "Deployment"), *find(registry_objects, "CronJob")]
        if pod_template(obj)["spec"]["serviceAccountName"] == RETRAIN_ACCOUNT
    }
    assert users == {"retrain"}


def test_the_role_allows_exactly_the_request_the_rollout_sends(registry_objects):
    """bentos.rollout's request, as a recording stand-in for the API server receives it (its
    body is checked in tests/unit/test_rollout.py), sent with the retrain pod's own settings,
    is one the Role allows in the pod's namespace; the same request for another Deployment, or
    another verb on this one, is not."""
    from bentos.rollout import roll

    cronjob = one(registry_objects, "CronJob", "retrain")
    env = resolve_env(registry_objects, container(cronjob), fields=pod_fields(cronjob))
    with api_server() as server:
        roll(
            env["BENTOS_RETRAIN_ROLLOUT_DEPLOYMENT"],
            env["BENTOS_RETRAIN_ROLLOUT_NAMESPACE"],
            {"rf-classifier": "v2"},
            api_client=server.client(),
        )
    seen = [(r.method, r.path) for r in server.requests]
    role = one(registry_objects, "Role", RETRAIN_ACCOUNT)
    binding = one(registry_objects, "RoleBinding", RETRAIN_ACCOUNT)
    assert len(seen) == 1, seen
    method, path = seen[0]
    request = api_request(method, path)
    assert request["namespace"] == role["metadata"]["namespace"] == binding["metadata"]["namespace"]
    assert role_allows(role, **request)
    # Nothing more: another Deployment, or deleting or replacing this one, is refused.
    assert not role_allows(role, **{**request, "name": "another"})
    for verb in ("delete", "update", "list", "watch", "create"):
        assert not role_allows(role, **{**request, "verb": verb}), verb
    assert not role_allows(role, **{**request, "group": "", "resource": "secrets"})


def _write(folder, kustomization_yaml: dict, **files: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization_yaml))
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def _registry_of(objects: list[dict]) -> dict[tuple[str, str], str]:
    """(workload, container) -> the BENTOS_REGISTRY it gets, for every container that gets one."""
    return {
        (obj["metadata"]["name"], ctr["name"]): env["BENTOS_REGISTRY"]
        for obj in [*find(objects, "Deployment"), *find(objects, "CronJob")]
        for ctr in all_containers(obj)
        if "BENTOS_REGISTRY" in (env := resolve_env(objects, ctr))
    }


def test_an_overlay_sets_the_registry_url_by_a_merge_over_prod_or_a_patch_beside_the_component(
    rendered, tmp_path
):
    """docs/deploy.md, "The model registry": an overlay of prod merges the literal (as step 4
    does for the other ConfigMaps); an overlay that lists the component itself cannot merge in
    the same kustomization.yaml (its generators run before its components) and patches the
    ConfigMap instead. Either way the ConfigMap's hashed name changes, so the pods roll."""
    url = "s3://my-bucket/team/registry/"
    before = _registry_map(rendered["prod"])["metadata"]["name"]
    merged = render(
        _write(
            tmp_path / "over-prod",
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / "prod", tmp_path / "over-prod")],
                "configMapGenerator": [
                    {
                        "name": "model-registry",
                        "behavior": "merge",
                        "literals": [f"BENTOS_REGISTRY={url}"],
                    }
                ],
            },
        )
    )
    own = tmp_path / "own"
    rel = os.path.relpath(K8S, own)
    beside = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "bentos-own",
        "resources": [f"{rel}/base"],
        "components": [f"{rel}/components/registry", f"{rel}/components/batch-shards"],
    }
    patch = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "model-registry"},
        "data": {"BENTOS_REGISTRY": url},
    }
    patched = render(
        _write(
            own,
            {**beside, "patches": [{"path": "registry.yaml"}]},
            **{"registry.yaml": yaml.safe_dump(patch)},
        )
    )
    for objects, monitored in ((merged, True), (patched, False)):
        readers = _registry_of(objects)
        assert set(readers) == {
            (APP, PULL_MODELS),
            ("batch-predict", PULL_MODELS),
            ("retrain", "retrain"),
            *([("monitor", "monitor")] if monitored else []),
        }
        assert set(readers.values()) == {url}
        name = _registry_map(objects)["metadata"]["name"]
        assert name != before and config_map_data(objects, name) == {"BENTOS_REGISTRY": url}
    # The merge in the kustomization that lists the component fails, as the docs say.
    _write(
        own,
        {
            **beside,
            "configMapGenerator": [
                {
                    "name": "model-registry",
                    "behavior": "merge",
                    "literals": [f"BENTOS_REGISTRY={url}"],
                }
            ],
        },
    )
    proc = subprocess.run([kubectl(), "kustomize", str(own)], capture_output=True, text=True)
    assert proc.returncode != 0 and "cannot merge or replace" in proc.stderr, proc.stderr
