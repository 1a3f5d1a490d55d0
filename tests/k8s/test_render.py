"""The kustomize tree renders (`kubectl kustomize`), every rendered object of Kubernetes' own
kinds validates strictly against the Kubernetes 1.34 and 1.37 schemas (the registry component's
RBAC and init containers included; the monitoring component's Prometheus Operator objects are
validated in test_monitoring.py), and the layout holds: the base names its two images only (the serving image for the
Deployment and the batch CronJob, the training image for the retrain CronJob), each overlay sets
them and patches only what differs from the base, every object carries the recommended labels
and its overlay's namespace, and generated ConfigMaps roll the pods.

No skips: a missing kubectl or tool is a failure (`make tools` installs the tools' venv).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess

import pytest
import yaml

from tests.support.k8s import (
    APP,
    DASHBOARD,
    K8S,
    OPERATOR_KINDS,
    OVERLAYS,
    SERVING_IMAGE,
    TRAINING_IMAGE,
    all_containers,
    builtin,
    deployment,
    find,
    includes_component,
    kubectl,
    kustomization,
    one,
    pod_template,
    pod_templates,
    render,
    resolve_env,
    validate_strictly,
)

VALIDATE_VERSIONS = ("1.34.0", "1.37.0")
# Cluster-scoped kinds: the overlay's Namespace, and retrain-on-drift's admission policy, into
# which kustomize 5.5 (whose built-in schema predates it) writes the overlay's namespace; the API
# server drops the namespace of a cluster-scoped object on create and update (rest.BeforeCreate).
CLUSTER_SCOPED = {"Namespace", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
GENERATED = {
    "tabular-classifier-settings",
    "tabular-classifier-bentoml-config",
    "batch-predict-config",
    "retrain-config",
}
REGISTRY_GENERATED = {"model-registry"}  # k8s/components/registry
MODEL_MONITORING_GENERATED = {"prediction-log", "monitor-config"}  # its model-monitoring
# Which image each workload runs (its every container, init containers included).
WORKLOAD_IMAGES = {
    ("Deployment", APP): SERVING_IMAGE,
    ("CronJob", "batch-predict"): SERVING_IMAGE,
    ("CronJob", "retrain"): TRAINING_IMAGE,
}
# k8s/components/model-monitoring's drift check (its report draws with matplotlib).
MONITOR_IMAGES = {("CronJob", "monitor"): TRAINING_IMAGE}


def _workload_images(overlay: str) -> dict[tuple[str, str], str]:
    monitored = includes_component(overlay, "model-monitoring")
    return {**WORKLOAD_IMAGES, **(MONITOR_IMAGES if monitored else {})}


def _images(objects: list[dict]) -> dict[tuple[str, str], set[str]]:
    """(kind, name) of each workload -> the images of all its containers."""
    return {
        (obj["kind"], obj["metadata"]["name"]): {c["image"] for c in all_containers(obj)}
        for obj, _ in pod_templates(objects)
    }


def test_kubectl_bundles_kustomize_5_1_or_newer():
    """Components apply after the kustomization's own generators from kustomize 5.1 on
    (kubectl 1.31 and newer): an overlay's BENTOS_SHARD_COUNT reaches completions only then."""
    proc = subprocess.run(
        [kubectl(), "version", "--client", "-o", "json"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    version = json.loads(proc.stdout)["kustomizeVersion"]
    major, minor = (int(n) for n in re.match(r"v(\d+)\.(\d+)", version).groups())
    assert (major, minor) >= (5, 1), version


def test_the_base_renders_every_workload_with_its_plain_image_name():
    objects = render(K8S / "base")
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "CronJob", "ConfigMap", "NetworkPolicy"} <= kinds
    # `images:` belongs to the overlays: the base keeps the names the overlays map.
    assert "images" not in kustomization(K8S / "base")
    assert _images(objects) == {w: {image} for w, image in WORKLOAD_IMAGES.items()}


def test_every_overlay_renders_what_it_deploys_and_no_secret(objects, overlay):
    kinds = sorted(o["kind"] for o in objects)
    expected = {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "CronJob",
    }
    assert expected <= set(kinds), kinds
    assert kinds.count("CronJob") == 2 + includes_component(overlay, "model-monitoring")
    assert not find(objects, "Secret"), "no Secret may be rendered: credentials stay out of git"
    # RBAC only with the registry component (the retrain job's rollout) and retrain-on-drift
    # (the monitor starts the retrain CronJob), and namespaced only.
    roles = sum(includes_component(overlay, c) for c in ("registry", "retrain-on-drift"))
    rbac = {"Role": roles, "RoleBinding": roles} if roles else {}
    assert {k: kinds.count(k) for k in ("Role", "RoleBinding") if k in kinds} == rbac
    assert not {"ClusterRole", "ClusterRoleBinding"} & set(kinds)


@pytest.mark.parametrize("version", VALIDATE_VERSIONS)
def test_every_rendered_object_validates_strictly(rendered, version, tmp_path):
    """Every object of Kubernetes' own kinds; the monitoring component's PodMonitor and
    PrometheusRule are checked against the Prometheus Operator's schemas in test_monitoring.py."""
    files = []
    for overlay in OVERLAYS:
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(yaml.safe_dump_all(builtin(rendered[overlay])))
        files.append(path)
    status, out = validate_strictly(files, version)
    assert status == 0, out
    # Every object checked against a schema, none skipped as unknown.
    checked = sum(len(builtin(rendered[o])) for o in OVERLAYS)
    assert out.count(" passed for resource ") == checked, out
    left = {o["kind"] for overlay in OVERLAYS for o in rendered[overlay]} - {
        o["kind"] for overlay in OVERLAYS for o in builtin(rendered[overlay])
    }
    assert left <= set(OPERATOR_KINDS), left


def test_strict_validation_rejects_a_misspelt_field(rendered, tmp_path):
    """The validator is not vacuous: a misspelt field fails it."""
    dep = copy.deepcopy(deployment(rendered["prod"]))
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(dep))
    status, out = validate_strictly([path], VALIDATE_VERSIONS[0])
    assert status != 0, out


def test_the_overlay_sets_the_serving_image_and_the_training_image_of_their_workloads(
    objects, overlay
):
    """The Deployment and the batch CronJob (and their init containers) run the serving image,
    the retrain CronJob the training image, each set in the overlay's `images:` only."""
    entries = {i["name"]: i for i in kustomization(overlay)["images"]}
    assert set(entries) == {SERVING_IMAGE, TRAINING_IMAGE}
    # tests/image (harness.render_overlay) reads the serving image's entry first.
    assert kustomization(overlay)["images"][0]["name"] == SERVING_IMAGE

    def ref(entry: dict) -> str:
        # `kustomize edit set image` writes newTag, or digest for NAME@sha256:...
        image = entry["newName"] + (f":{entry['newTag']}" if entry.get("newTag") else "")
        return image + (f"@{entry['digest']}" if entry.get("digest") else "")

    assert ref(entries[SERVING_IMAGE]) != ref(entries[TRAINING_IMAGE])
    expected = {w: {ref(entries[image])} for w, image in _workload_images(overlay).items()}
    assert _images(objects) == expected  # the Deployment and the CronJobs, nothing else


def test_recommended_labels_on_every_object(objects):
    for obj in objects:
        if obj["kind"] in CLUSTER_SCOPED:
            continue
        labels = obj["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/name") == APP, obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/part-of") == "bentos", obj["metadata"]["name"]
    for _, tpl in pod_templates(objects):
        assert tpl["metadata"]["labels"]["app.kubernetes.io/name"] == APP
        assert "app.kubernetes.io/component" in tpl["metadata"]["labels"]


def test_everything_lives_in_the_overlay_namespace_under_restricted_pod_security(objects, overlay):
    namespace = kustomization(overlay)["namespace"]
    ns = one(objects, "Namespace")
    assert ns["metadata"]["name"] == namespace
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]


def _unchanged(patch, base, at: str = "") -> list[str]:
    """The paths at which `patch` (a strategic-merge patch) sets what `base` already has."""
    if isinstance(patch, dict) and isinstance(base, dict):
        return [
            p for k, v in patch.items() if k in base for p in _unchanged(v, base[k], f"{at}.{k}")
        ]
    named = isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in patch)
    if named and isinstance(base, list):
        by_name = {i.get("name"): i for i in base if isinstance(i, dict)}
        return [
            p
            for item in patch
            if item["name"] in by_name
            for p in _unchanged(
                {k: v for k, v in item.items() if k != "name"},
                by_name[item["name"]],
                f"{at}[{item['name']}]",
            )
        ]
    return [at] if patch == base else []


def _literals(generator: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in generator.get("literals") or [])


def _base_with_components(overlay_name: str, folder) -> list[dict]:
    """What the overlay builds on: the base with the overlay's own components (whose objects,
    such as the registry's ConfigMap, an overlay may patch too), without its namespace."""
    ours = K8S / "overlays" / overlay_name
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "base", folder)],
                "components": [
                    os.path.relpath((ours / c).resolve(), folder)
                    for c in kustomization(overlay_name).get("components") or []
                ],
            }
        )
    )
    return render(folder)


def _patched(objects: list[dict], kind: str, name: str) -> dict:
    """The object a patch names: by its name, or a generated one by its name and hash."""
    found = find(objects, kind, name) or [
        o
        for o in find(objects, kind)
        if re.fullmatch(rf"{re.escape(name)}-[a-z0-9]{{10}}", o["metadata"]["name"])
    ]
    assert len(found) == 1, f"a patch names {kind} {name}: found {len(found)}"
    return found[0]


@pytest.mark.parametrize("overlay_name", OVERLAYS)
def test_overlays_write_only_what_differs_from_the_base(overlay_name, tmp_path):
    """Every value an overlay patches, merges into a generated ConfigMap or counts in
    `replicas:` differs from the base's (with the overlay's components): an overlay reads as
    its list of differences."""
    base = _base_with_components(overlay_name, tmp_path)
    ours = kustomization(overlay_name)
    folder = K8S / "overlays" / overlay_name
    unchanged = []
    for entry in ours.get("patches") or []:
        assert "path" in entry, "inline patches belong in a component"
        for doc in yaml.safe_load_all((folder / entry["path"]).read_text()):
            target = _patched(base, doc["kind"], doc["metadata"]["name"])
            body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
            unchanged += [f"{entry['path']}:{p}" for p in _unchanged(body, target)]
    base_generators = {g["name"]: g for g in kustomization(K8S / "base")["configMapGenerator"]}
    for generator in ours.get("configMapGenerator") or []:
        assert generator["behavior"] == "merge", generator["name"]  # only the keys that differ
        theirs = _literals(base_generators[generator["name"]])
        for key, value in _literals(generator).items():
            if theirs.get(key) == value:
                unchanged.append(f"{generator['name']}:{key}")
    for replicas in ours.get("replicas") or []:
        if one(base, "Deployment", replicas["name"])["spec"].get("replicas") == replicas["count"]:
            unchanged.append(f"replicas:{replicas['name']}")
    assert unchanged == [], unchanged


def test_generated_configmaps_are_hashed_and_every_reference_resolves(objects, overlay):
    names = {cm["metadata"]["name"] for cm in find(objects, "ConfigMap")}
    generated = GENERATED | (
        REGISTRY_GENERATED if includes_component(overlay, "registry") else set()
    )
    if includes_component(overlay, "model-monitoring"):
        generated |= MODEL_MONITORING_GENERATED
    for base in generated:
        hashed = [n for n in names if re.fullmatch(rf"{re.escape(base)}-[a-z0-9]{{10}}", n)]
        assert len(hashed) == 1, (base, names)
    # The monitoring component's dashboard: unhashed, read by Grafana's sidecar, not by a pod.
    dashboards = {DASHBOARD} if includes_component(overlay, "monitoring") else set()
    assert dashboards <= names, names
    names -= dashboards
    assert len(names) == len(generated), names  # no other ConfigMap
    referenced = set()
    for obj, tpl in pod_templates(objects):
        for ctr in all_containers(obj):
            referenced |= {
                s["configMapRef"]["name"] for s in ctr.get("envFrom", []) if "configMapRef" in s
            }
        referenced |= {v["configMap"]["name"] for v in tpl["spec"]["volumes"] if "configMap" in v}
    assert referenced == names, (referenced, names)


def test_a_config_change_rolls_the_pods(overlay, tmp_path):
    """A changed setting renames its generated ConfigMap, which changes the pod template."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / overlay, tmp_path)],
                "configMapGenerator": [
                    {
                        "name": "tabular-classifier-settings",
                        "behavior": "merge",
                        "literals": ["BENTOS_MAX_ROWS=7"],
                    }
                ],
            }
        )
    )
    changed = render(tmp_path)
    before = pod_template(deployment(render(overlay)))
    after = pod_template(deployment(changed))
    assert before != after
    assert resolve_env(changed, after["spec"]["containers"][0])["BENTOS_MAX_ROWS"] == "7"
