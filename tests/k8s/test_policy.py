"""Security of the rendered manifests: checkov (its Kubernetes framework, over both overlays)
finds nothing unexplained and runs its Pod Security checks on every workload, and the few
properties that neither checkov nor strict schema validation check are asserted here.

checkov enforces, on the Deployment and both CronJobs of each overlay (every container,
init containers included), what hand-written asserts used to:
  no hostNetwork, hostPID, hostIPC ........ CKV_K8S_19, CKV_K8S_17, CKV_K8S_18
  not privileged .......................... CKV_K8S_16
  allowPrivilegeEscalation: false ......... CKV_K8S_20 (explicitly false in every container)
  readOnlyRootFilesystem: true ............ CKV_K8S_22
  capabilities drop ALL, none added ....... CKV_K8S_37 (and CKV_K8S_28, NET_RAW), CKV_K8S_25
  seccompProfile RuntimeDefault ........... CKV_K8S_31
  automountServiceAccountToken: false ..... CKV_K8S_38 (the pod's field; suppressed on the
                                            retrain CronJob of an overlay with the registry
                                            component, whose pod patches the Deployment, and
                                            on the monitor CronJob with retrain-on-drift,
                                            whose pod starts the retrain CronJob)
  cpu and memory requests and limits ...... CKV_K8S_10, CKV_K8S_11, CKV_K8S_12, CKV_K8S_13
and, on the Roles and RoleBindings (registry, retrain-on-drift): no wildcards (CKV_K8S_49), no bind or
escalate (CKV_K8S_157, CKV_K8S_158), and its graph checks (CKV2_K8S_1 to CKV2_K8S_5: no
escalation through RoleBindings, pods/exec, impersonation, services/status, reading Secrets).
What stays here, and what checkov does not check about it, is in each test's docstring.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support.k8s import (
    APP,
    OVERLAYS,
    POD_KINDS,
    all_containers,
    checkov,
    find,
    includes_component,
    init_containers,
    kustomization,
    pod_templates,
    resolve_env,
)

UID = 1034  # the Bento image's user, bentoml (see the Bento's env/docker/Dockerfile)
POD_SECURITY_CHECKS = {
    "CKV_K8S_10",
    "CKV_K8S_11",
    "CKV_K8S_12",
    "CKV_K8S_13",
    "CKV_K8S_16",
    "CKV_K8S_17",
    "CKV_K8S_18",
    "CKV_K8S_19",
    "CKV_K8S_20",
    "CKV_K8S_22",
    "CKV_K8S_25",
    "CKV_K8S_28",
    "CKV_K8S_31",
    "CKV_K8S_37",
    "CKV_K8S_38",
}
# Suppressed with a reason on the objects (checkov.io/skip* annotations, docs/deploy.md):
# the image's uid 1034 (40), a tag rather than a digest (43), object-store credentials from env
# vars (35) in the CronJobs; with the registry component, also in the Deployment (its init
# container pulls the models) and the retrain pod's ServiceAccount token (38: the rollout).
SUPPRESSED = {
    ("Deployment", APP): {"CKV_K8S_40", "CKV_K8S_43"},
    ("CronJob", "batch-predict"): {"CKV_K8S_40", "CKV_K8S_43", "CKV_K8S_35"},
    ("CronJob", "retrain"): {"CKV_K8S_40", "CKV_K8S_43", "CKV_K8S_35"},
}
# k8s/components/model-monitoring: its drift check's CronJob, as the other jobs.
SUPPRESSED_WITH_MODEL_MONITORING = {
    ("CronJob", "monitor"): {"CKV_K8S_40", "CKV_K8S_43", "CKV_K8S_35"},
}
SUPPRESSED_WITH_REGISTRY = {
    ("Deployment", APP): {"CKV_K8S_35"},
    ("CronJob", "retrain"): {"CKV_K8S_38"},
}
# k8s/components/retrain-on-drift: the monitor pod's token, to start the retrain CronJob.
SUPPRESSED_WITH_RETRAIN_ON_DRIFT = {("CronJob", "monitor"): {"CKV_K8S_38"}}
# The components that bind a Role to a pod's own account, and the pod whose token it is.
TOKENS = {
    "registry": ("retrain", f"{APP}-retrain"),
    "retrain-on-drift": ("monitor", f"{APP}-monitor"),
}
RBAC_CHECKS = {
    "Role": {"CKV_K8S_49", "CKV_K8S_157", "CKV_K8S_158"},
    "RoleBinding": {"CKV2_K8S_1", "CKV2_K8S_2", "CKV2_K8S_3", "CKV2_K8S_4", "CKV2_K8S_5"},
}


def _suppressed(overlay: str) -> set[tuple[str, str]]:
    """(check id, checkov resource id) of every suppression expected in `overlay`."""
    namespace = _namespace(overlay)
    expected = {k: set(v) for k, v in SUPPRESSED.items()}
    if includes_component(overlay, "registry"):
        for workload, checks in SUPPRESSED_WITH_REGISTRY.items():
            expected[workload] |= checks
    if includes_component(overlay, "model-monitoring"):
        expected.update({k: set(v) for k, v in SUPPRESSED_WITH_MODEL_MONITORING.items()})
    if includes_component(overlay, "retrain-on-drift"):
        for workload, checks in SUPPRESSED_WITH_RETRAIN_ON_DRIFT.items():
            expected[workload] |= checks
    return {
        (check, f"{kind}.{namespace}.{name}")
        for (kind, name), checks in expected.items()
        for check in checks
    }


def _namespace(overlay: str) -> str:
    return kustomization(overlay)["namespace"]


@pytest.fixture(scope="module")
def report(rendered, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("checkov")
    for overlay in OVERLAYS:
        (folder / f"{overlay}.yaml").write_text(yaml.safe_dump_all(rendered[overlay]))
    return checkov(folder)


def _workloads(rendered) -> set[str]:
    """checkov's resource ids of the Deployment and CronJobs: KIND.NAMESPACE.NAME."""
    return {
        f"{o['kind']}.{o['metadata']['namespace']}.{o['metadata']['name']}"
        for overlay in OVERLAYS
        for o in rendered[overlay]
        if o["kind"] in POD_KINDS
    }


def test_checkov_finds_no_failed_checks(report):
    summary = report["summary"]
    failed = [
        (c["check_id"], c["resource"], c["check_name"])
        for c in report["results"].get("failed_checks", [])
    ]
    assert failed == [] and summary["failed"] == 0, failed
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 100 and summary["resource_count"] >= 20
    assert report["returncode"] == 0, report["stderr"]


def test_checkov_suppressions_are_the_documented_ones_with_their_reasons(report, rendered):
    """Exactly these checks on exactly these objects: CKV_K8S_38 (a ServiceAccount token) on
    the retrain CronJob of an overlay with the registry component and the monitor CronJob of
    one with retrain-on-drift, and nowhere else."""
    skipped = report["results"].get("skipped_checks", [])
    expected = set().union(*(_suppressed(overlay) for overlay in OVERLAYS))
    assert {(c["check_id"], c["resource"]) for c in skipped} == expected
    for check in skipped:
        assert check["resource"] in _workloads(rendered), check["resource"]
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 30, (check["check_id"], check["resource"], reason)
    token = {c["resource"] for c in skipped if c["check_id"] == "CKV_K8S_38"}
    expected_tokens = {
        f"CronJob.{_namespace(o)}.{pod}"
        for o in OVERLAYS
        for component, (pod, _) in TOKENS.items()
        if includes_component(o, component)
    }
    assert expected_tokens and token == expected_tokens


def test_checkov_passes_its_pod_security_checks_on_every_workload(report, rendered):
    """The checks that replaced hand-written asserts (see the module docstring) ran, and
    passed, on each Deployment and CronJob, except where a suppression (above) says why not: a
    check checkov stopped running would show here."""
    passed = {(c["check_id"], c["resource"]) for c in report["results"]["passed_checks"]}
    suppressed = set().union(*(_suppressed(overlay) for overlay in OVERLAYS))
    workloads = _workloads(rendered)
    # The Deployment and two CronJobs of each overlay, and the monitor's where it is included.
    monitored = sum(includes_component(o, "model-monitoring") for o in OVERLAYS)
    assert len(workloads) == 3 * len(OVERLAYS) + monitored
    missing = sorted(
        (check, resource)
        for check in POD_SECURITY_CHECKS
        for resource in workloads
        if (check, resource) not in passed and (check, resource) not in suppressed
    )
    assert missing == [], missing


def test_checkov_passes_its_rbac_checks_on_every_role_and_binding(report, rendered):
    """The Roles and RoleBindings were scanned, and passed, in every overlay that renders them:
    one of each per component that binds a pod's account (TOKENS)."""
    passed = {(c["check_id"], c["resource"]) for c in report["results"]["passed_checks"]}
    expected = {
        (check, f"{o['kind']}.{o['metadata']['namespace']}.{o['metadata']['name']}")
        for overlay in OVERLAYS
        for o in rendered[overlay]
        if o["kind"] in RBAC_CHECKS
        for check in RBAC_CHECKS[o["kind"]]
    }
    assert len(expected) == sum(len(c) for c in RBAC_CHECKS.values()) * sum(
        includes_component(o, component) for o in OVERLAYS for component in TOKENS
    )
    assert expected - passed == set()


def test_pods_run_as_the_image_user_with_run_as_non_root_set(objects):
    """checkov's CKV_K8S_23 also passes a pod that sets only runAsUser > 0, which the
    namespace's "restricted" Pod Security admission rejects (runAsNonRoot must be true, and may
    not be false in a container); CKV_K8S_40, suppressed, would only ask for a uid >= 10000.
    The uid and gid must be the image's own, 1034: its model folders are mode 0700."""
    for obj, tpl in pod_templates(objects):
        name = obj["metadata"]["name"]
        pod = tpl["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (UID, UID, UID), name
        for ctr in all_containers(obj):
            sc = ctr.get("securityContext") or {}
            assert sc.get("runAsNonRoot", True) is True, (name, ctr["name"])
            assert (sc.get("runAsUser", UID), sc.get("runAsGroup", UID)) == (UID, UID), name


def test_pods_use_their_own_service_accounts_and_only_pods_with_a_role_mount_a_token(
    objects, overlay
):
    """CKV_K8S_38 checks the pod's automountServiceAccountToken and CKV_K8S_41 only the
    `default` ServiceAccount: not that the named accounts are rendered, nor their own field.
    Every account refuses a token to a pod that does not ask; only the retrain pod asks, with the
    registry component (its rollout patches the Deployment), and the monitor pod, with
    retrain-on-drift (it starts the retrain CronJob), each under an account of its own."""
    accounts = {sa["metadata"]["name"]: sa for sa in find(objects, "ServiceAccount")}
    assert all(sa["automountServiceAccountToken"] is False for sa in accounts.values())
    registry = includes_component(overlay, "registry")
    tokens = {pair for c, pair in TOKENS.items() if includes_component(overlay, c)}
    with_token = set()
    for obj, tpl in pod_templates(objects):
        account = tpl["spec"]["serviceAccountName"]
        assert account in accounts and account != "default", obj["metadata"]["name"]
        if tpl["spec"]["automountServiceAccountToken"] is not False:
            assert tpl["spec"]["automountServiceAccountToken"] is True
            with_token.add((obj["metadata"]["name"], account))
    assert with_token == tokens
    users = [tpl["spec"]["serviceAccountName"] for _, tpl in pod_templates(objects)]
    for _, account in tokens:
        assert users.count(account) == 1, account  # that pod's alone
    assert registry or not tokens  # retrain-on-drift starts the retrain job of the registry


def test_pod_volumes_are_configmaps_and_emptydirs_only(objects):
    """checkov looks for one hostPath only, the Docker socket (CKV_K8S_27); no secret,
    hostPath or persistent volume is mounted at all."""
    for obj, tpl in pod_templates(objects):
        for volume in tpl["spec"].get("volumes") or []:
            assert set(volume) - {"name"} <= {"configMap", "emptyDir"}, (obj["kind"], volume)


def test_writable_paths_are_size_limited_emptydirs(objects):
    """The read-only root filesystem (CKV_K8S_22) must leave BentoML somewhere to write:
    BENTOML_HOME (store folders, Prometheus multiprocess files) and /tmp (its workers' sockets)
    are emptyDir mounts, each with a sizeLimit, in every container."""
    for obj, tpl in pod_templates(objects):
        volumes = {v["name"]: v for v in tpl["spec"]["volumes"]}
        for ctr in all_containers(obj):
            writable = {
                m["mountPath"]: volumes[m["name"]]["emptyDir"]
                for m in ctr["volumeMounts"]
                if "emptyDir" in volumes[m["name"]] and not m.get("readOnly")
            }
            name = obj["metadata"]["name"]
            home = resolve_env(objects, ctr)["BENTOML_HOME"]
            assert home in writable, (name, home, sorted(writable))
            assert "/tmp" in writable, name
            # The image's own BENTOML_HOME (/home/bentoml/) is on the read-only root.
            assert not home.startswith("/home/bentoml"), name
            for path, empty_dir in writable.items():
                assert empty_dir.get("sizeLimit"), (name, path)


def test_object_store_credentials_come_from_an_optional_secret_reference_only(objects):
    """checkov's CKV_K8S_35 (secrets as files) is suppressed on the CronJobs, and with the
    registry component on the Deployment, whose fsspec clients read env vars: what remains to
    check is that every container that reads the object store (the CronJobs' and the init
    containers) takes the one optional Secret, the serving containers none, and that no
    credential is written inline."""
    for obj, _ in pod_templates(objects):
        for ctr in all_containers(obj):
            refs = [s["secretRef"] for s in ctr.get("envFrom", []) if "secretRef" in s]
            # The servers write the prediction log (k8s/components/model-monitoring).
            logs = any(
                "prediction-log" in str(s.get("configMapRef")) for s in ctr.get("envFrom", [])
            )
            reads_the_store = obj["kind"] == "CronJob" or ctr in init_containers(obj) or logs
            expected = [{"name": "bentos-object-store", "optional": True}]
            assert refs == (expected if reads_the_store else []), (obj["kind"], ctr["name"])
            for item in ctr.get("env", []):
                if re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", item["name"]):
                    assert "value" not in item, item["name"]
    assert not find(objects, "Secret")
