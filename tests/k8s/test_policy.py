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
  automountServiceAccountToken: false ..... CKV_K8S_38 (the pod's field)
  cpu and memory requests and limits ...... CKV_K8S_10, CKV_K8S_11, CKV_K8S_12, CKV_K8S_13
What stays here, and what checkov does not check about it, is in each test's docstring.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support.k8s import (
    OVERLAYS,
    POD_KINDS,
    checkov,
    container,
    find,
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
# Suppressed with a reason on the objects (checkov.io/skip* annotations, docs/deploy.md).
SUPPRESSED = {"CKV_K8S_40", "CKV_K8S_43", "CKV_K8S_35"}


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
    skipped = report["results"].get("skipped_checks", [])
    assert {c["check_id"] for c in skipped} == SUPPRESSED
    for check in skipped:
        assert check["resource"] in _workloads(rendered), check["resource"]
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 30, (check["check_id"], check["resource"], reason)


def test_checkov_passes_its_pod_security_checks_on_every_workload(report, rendered):
    """The checks that replaced hand-written asserts (see the module docstring) ran, and
    passed, on each Deployment and CronJob: a check checkov stopped running would show here."""
    passed = {(c["check_id"], c["resource"]) for c in report["results"]["passed_checks"]}
    workloads = _workloads(rendered)
    assert len(workloads) == 3 * len(OVERLAYS)
    missing = sorted(
        (check, resource)
        for check in POD_SECURITY_CHECKS
        for resource in workloads
        if (check, resource) not in passed
    )
    assert missing == [], missing


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
        for ctr in tpl["spec"]["containers"] + tpl["spec"].get("initContainers", []):
            sc = ctr.get("securityContext") or {}
            assert sc.get("runAsNonRoot", True) is True, (name, ctr["name"])
            assert (sc.get("runAsUser", UID), sc.get("runAsGroup", UID)) == (UID, UID), name


def test_pods_use_their_own_service_accounts_without_tokens(objects):
    """CKV_K8S_38 checks the pod's automountServiceAccountToken and CKV_K8S_41 only the
    `default` ServiceAccount: not that the named accounts are rendered, nor their own field."""
    accounts = {sa["metadata"]["name"]: sa for sa in find(objects, "ServiceAccount")}
    for obj, tpl in pod_templates(objects):
        account = tpl["spec"]["serviceAccountName"]
        assert account in accounts and account != "default", obj["metadata"]["name"]
        assert accounts[account]["automountServiceAccountToken"] is False, account


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
        for ctr in tpl["spec"]["containers"]:
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
    """checkov's CKV_K8S_35 (secrets as files) is suppressed on the CronJobs, whose fsspec
    clients read env vars: what remains to check is that no credential is written inline."""
    for cronjob in find(objects, "CronJob"):
        ctr = container(cronjob)
        refs = [s["secretRef"] for s in ctr.get("envFrom", []) if "secretRef" in s]
        assert refs == [{"name": "bentos-object-store", "optional": True}]
        for item in ctr.get("env", []):
            if re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", item["name"]):
                assert "value" not in item, item["name"]
    assert not find(objects, "Secret")
