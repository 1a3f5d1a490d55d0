"""The Kubernetes manifests (k8s/, kustomize): each overlay renders with `kubectl kustomize`,
every object validates against the Kubernetes 1.34 and 1.37 schemas, the structure holds what
docs/deploy.md promises, checkov finds nothing unexplained, and the rendered Deployment, run as
it declares it, answers its own probes.

No skips: a missing kubectl or tool is a failure (`make tools` installs the tools' venv).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import ROOT, Server, free_port
from k8s_render import (
    K8S,
    OVERLAYS,
    container,
    container_port,
    find,
    job_contract,
    kubectl,
    mounted_files,
    one,
    pod_template,
    pod_templates,
    render,
    render_text,
    resolve_env,
    tool,
)

from bentos.settings import Settings

APP = "tabular-classifier"
UID = 1034  # the Bento image's user, bentoml (see the Bento's env/docker/Dockerfile)
VALIDATE_VERSIONS = ("1.34.0", "1.37.0")
SHARDS = {"dev": 2, "prod": 4}
CLUSTER_SCOPED = {"Namespace"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request) -> str:
    return request.param


@pytest.fixture
def objects(rendered, overlay) -> list[dict]:
    return rendered[overlay]


def deployment(objects: list[dict]) -> dict:
    return one(objects, "Deployment", APP)


def server(objects: list[dict]) -> dict:
    return container(deployment(objects), "server")


def bentoml_config(objects: list[dict]) -> tuple[str, dict]:
    """(path in the container, parsed content) of the file that BENTOML_CONFIG names."""
    ctr = server(objects)
    path = resolve_env(objects, ctr)["BENTOML_CONFIG"]
    for mount_path, files in mounted_files(objects, deployment(objects), ctr).items():
        for name, content in files.items():
            if f"{mount_path.rstrip('/')}/{name}" == path:
                return path, yaml.safe_load(content)
    raise AssertionError(f"BENTOML_CONFIG={path} is not a file of a mounted ConfigMap")


def service_config(objects: list[dict]) -> dict:
    return bentoml_config(objects)[1]["services"][APP]


def overlay_kustomization(overlay: str) -> dict:
    return yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())


# --- rendering and schema validation -------------------------------------------------------


def test_kubectl_is_there_and_renders_the_base():
    assert Path(kubectl()).exists()
    kinds = {d["kind"] for d in yaml.safe_load_all(render_text(K8S / "base")) if d}
    assert {"Deployment", "Service", "CronJob", "ConfigMap", "NetworkPolicy"} <= kinds


def test_every_overlay_renders_what_it_deploys(objects, overlay):
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
    assert kinds.count("CronJob") == 2
    assert not find(objects, "Secret"), "no Secret may be rendered: credentials stay out of git"


@pytest.mark.parametrize("version", VALIDATE_VERSIONS)
def test_every_rendered_object_validates_strictly(rendered, version, tmp_path):
    files = []
    expected = 0
    for overlay in OVERLAYS:
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(yaml.safe_dump_all(rendered[overlay]))
        files.append(str(path))
        expected += len(rendered[overlay])
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", version, *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # Every object checked against a schema, none skipped as unknown.
    assert out.count(" passed for resource ") == expected, out


def test_strict_validation_does_reject_an_unknown_field(rendered, tmp_path):
    """The validator is not vacuous: a misspelt field fails it."""
    dep = json.loads(json.dumps(deployment(rendered["prod"])))
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(dep))
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", VALIDATE_VERSIONS[0], str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr


# --- structure --------------------------------------------------------------------------------


def test_one_image_for_the_deployment_and_every_cronjob(objects, overlay):
    images = {c["image"] for _, tpl in pod_templates(objects) for c in tpl["spec"]["containers"]}
    assert len(images) == 1, images
    (entry,) = [i for i in overlay_kustomization(overlay)["images"] if i["name"] == APP]
    # `kustomize edit set image` writes newTag, or digest for NAME@sha256:...
    expected = entry["newName"] + (f":{entry['newTag']}" if entry.get("newTag") else "")
    expected += f"@{entry['digest']}" if entry.get("digest") else ""
    assert images == {expected}
    assert len(pod_templates(objects)) == 3  # the Deployment and both CronJobs


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
    namespace = overlay_kustomization(overlay)["namespace"]
    ns = one(objects, "Namespace")
    assert ns["metadata"]["name"] == namespace
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]


def test_deployment_runs_the_image_default_command_on_port_3000(objects):
    ctr = server(objects)
    # The Bento image's entrypoint serves the Bento (`bentoml serve $BENTO_PATH`) when the
    # container has no command and no args.
    assert "command" not in ctr and "args" not in ctr
    assert [(p["name"], p["containerPort"], p.get("protocol", "TCP")) for p in ctr["ports"]] == [
        ("http", 3000, "TCP")
    ]
    # The port BentoML listens on (its config) is the declared one.
    assert service_config(objects)["http"]["port"] == 3000


def test_probes_paths_ports_and_startup_budget(objects):
    ctr = server(objects)
    expected = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/livez"}
    for probe, path in expected.items():
        get = ctr[probe]["httpGet"]
        assert get["path"] == path, probe
        assert container_port(ctr, get["port"]) == 3000, probe
        assert get.get("scheme", "HTTP") == "HTTP"
    startup = ctr["startupProbe"]
    budget = startup.get("initialDelaySeconds", 0) + startup.get("periodSeconds", 10) * startup.get(
        "failureThreshold", 3
    )
    assert budget >= 120, f"model loading gets only {budget}s"
    # Liveness must not kill a pod that merely has a slow request: the timeout is generous.
    assert ctr["livenessProbe"].get("failureThreshold", 3) >= 3


def test_every_container_has_cpu_and_memory_requests_and_limits(objects):
    for obj, tpl in pod_templates(objects):
        for ctr in tpl["spec"]["containers"]:
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(ctr["resources"][kind]), (
                    obj["metadata"]["name"],
                    kind,
                )


def test_pod_security_restricted_on_every_pod_template(objects):
    accounts = {sa["metadata"]["name"]: sa for sa in find(objects, "ServiceAccount")}
    for obj, tpl in pod_templates(objects):
        name = obj["metadata"]["name"]
        spec = tpl["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert (pod["runAsUser"], pod["runAsGroup"]) == (UID, UID), name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["serviceAccountName"] in accounts, name
        assert accounts[spec["serviceAccountName"]]["automountServiceAccountToken"] is False
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), (name, host)
        for volume in spec.get("volumes") or []:
            assert set(volume) - {"name"} <= {"configMap", "emptyDir"}, (name, volume)
        for ctr in spec["containers"] + spec.get("initContainers", []):
            sc = ctr["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert not sc["capabilities"].get("add"), name
            assert not sc.get("privileged"), name
            assert sc.get("runAsNonRoot", True) is True, name
            assert sc.get("runAsUser", UID) == UID, name


def test_writable_paths_are_emptydirs(objects):
    """Read-only root filesystem: BENTOML_HOME (store folders, Prometheus multiprocess files)
    and /tmp (BentoML's worker sockets) must be emptyDir mounts."""
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


def test_generated_configmaps_are_hashed_and_every_reference_resolves(objects):
    generated = {
        "tabular-classifier-settings",
        "tabular-classifier-bentoml-config",
        "batch-predict-config",
        "retrain-config",
    }
    names = {cm["metadata"]["name"] for cm in find(objects, "ConfigMap")}
    for base in generated:
        hashed = [n for n in names if re.fullmatch(rf"{re.escape(base)}-[a-z0-9]{{10}}", n)]
        assert len(hashed) == 1, (base, names)
    referenced = set()
    for _, tpl in pod_templates(objects):
        for ctr in tpl["spec"]["containers"]:
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
    before = pod_template(deployment(render(overlay)))
    after = pod_template(deployment(render(tmp_path)))
    assert before != after
    assert resolve_env(render(tmp_path), after["spec"]["containers"][0])["BENTOS_MAX_ROWS"] == "7"


def test_settings_configmap_holds_only_known_service_settings(objects):
    known = {f"BENTOS_{f.upper()}" for f in Settings.__dataclass_fields__}
    env = resolve_env(objects, server(objects))
    declared = {k for k in env if k.startswith("BENTOS_")}
    assert {"BENTOS_MAX_ROWS", "BENTOS_MAX_BODY_BYTES"} <= declared
    assert declared <= known, declared - known
    Settings.from_env(env)  # every value parses


def test_bentoml_config_is_mounted_and_uses_known_keys_only(objects):
    """BentoML accepts unknown keys silently (a misspelt `worker:` would do nothing), so every
    key of the mounted file must be one of BentoML's own service keys."""
    from bentoml._internal.configuration.containers import get_default_config

    defaults = get_default_config(version=2)["services"]

    def unknown(ours: dict, theirs: dict, at: str = "") -> list[str]:
        bad = []
        for key, value in ours.items():
            if key not in theirs:
                bad.append(at + key)
            elif isinstance(value, dict) and isinstance(theirs[key], dict):
                bad += unknown(value, theirs[key], f"{at}{key}.")
        return bad

    path, config = bentoml_config(objects)
    assert path.endswith((".yaml", ".yml"))  # BentoML refuses other names
    assert "version" not in config
    assert set(config) == {"services"} and set(config["services"]) == {APP}
    assert unknown(config["services"][APP], defaults) == []
    assert service_config(objects)["workers"] >= 1


def test_graceful_termination_outlasts_prestop_and_request_timeout(objects):
    spec = pod_template(deployment(objects))["spec"]
    pre_stop = server(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and len(pre_stop) == 2, pre_stop
    timeout = service_config(objects)["traffic"]["timeout"]
    assert spec["terminationGracePeriodSeconds"] > int(pre_stop[1]) + timeout


def test_deployment_rolls_without_dropping_below_its_replicas_and_spreads(objects, overlay):
    dep = deployment(objects)
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = pod_template(dep)["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    spread = pod_template(dep)["spec"]["topologySpreadConstraints"]
    assert "kubernetes.io/hostname" in {c["topologyKey"] for c in spread}
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()


def test_service_is_clusterip_with_named_http_port(objects):
    svc = one(objects, "Service", APP)
    assert svc["spec"]["type"] == "ClusterIP"
    labels = pod_template(deployment(objects))["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    by_name = {p["name"]: p for p in svc["spec"]["ports"]}  # every port named
    assert len(by_name) == len(svc["spec"]["ports"])
    assert by_name["http"]["appProtocol"] == "http"
    assert container_port(server(objects), by_name["http"]["targetPort"]) == 3000
    serving = serving_ports(objects)
    for port in svc["spec"]["ports"]:
        assert port["appProtocol"], port["name"]
        target = port["targetPort"]
        assert target in serving.values() or target in serving, port["name"]


def test_grpc_container_port_service_and_grpc_probes(objects):
    grpc_ctr = container(deployment(objects), "grpc")
    assert grpc_ctr["image"] == server(objects)["image"]
    assert grpc_ctr["command"][:3] == ["python", "-m", "bentos.grpc"]
    assert container_port(grpc_ctr, "grpc") == 3001
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert grpc_ctr[probe]["grpc"]["port"] == 3001, probe
    svc = one(objects, "Service", APP)
    port = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert (port["port"], port["targetPort"], port["appProtocol"]) == (
        3001,
        "grpc",
        "kubernetes.io/h2c",
    )


def serving_ports(objects: list[dict]) -> dict[str, int]:
    """Port name -> number, for every port a container of the server pod declares."""
    return {
        p["name"]: p["containerPort"]
        for c in pod_template(deployment(objects))["spec"]["containers"]
        for p in c.get("ports") or []
    }


def test_disruption_budget_and_network_policy_select_the_server_pods(objects):
    labels = pod_template(deployment(objects))["metadata"]["labels"]
    pdb = one(objects, "PodDisruptionBudget", APP)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable")
    policy = one(objects, "NetworkPolicy", APP)
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = {
        (p["protocol"], p["port"]) for rule in policy["spec"]["ingress"] for p in rule["ports"]
    }
    # Exactly the ports the pod serves: 3000 (HTTP) and 3001 (gRPC).
    assert ports == {("TCP", port) for port in serving_ports(objects).values()}
    assert ports == {("TCP", 3000), ("TCP", 3001)}
    # The jobs' pods get a policy too, with no ingress at all.
    jobs = one(objects, "NetworkPolicy", f"{APP}-jobs")
    assert "ingress" not in jobs["spec"] and jobs["spec"]["policyTypes"] == ["Ingress"]
    for cronjob in find(objects, "CronJob"):
        pod_labels = pod_template(cronjob)["metadata"]["labels"]
        for expr in jobs["spec"]["podSelector"]["matchExpressions"]:
            assert pod_labels[expr["key"]] in expr["values"]


def test_hpa_only_in_prod_and_it_owns_the_replica_count(objects, overlay):
    hpas = find(objects, "HorizontalPodAutoscaler")
    dep = deployment(objects)
    if overlay == "prod":
        (hpa,) = hpas
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": APP,
        }
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        assert "replicas" not in dep["spec"]
    else:
        assert hpas == []
        assert dep["spec"]["replicas"] == 1


def _weekly(schedule: str) -> bool:
    minute, hour, day, month, weekday = schedule.split()
    return (
        minute.isdigit()
        and hour.isdigit()
        and (day, month) == ("*", "*")
        and re.fullmatch(r"[0-7]|MON|TUE|WED|THU|FRI|SAT|SUN", weekday) is not None
    )


@pytest.mark.parametrize("name", ["batch-predict", "retrain"])
def test_cronjob_run_policy(objects, name):
    cronjob = one(objects, "CronJob", name)
    spec = cronjob["spec"]
    job = spec["jobTemplate"]["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    assert job["backoffLimit"] == 3
    assert job["activeDeadlineSeconds"] > 0
    assert job["ttlSecondsAfterFinished"] > 0
    assert pod_template(cronjob)["spec"]["restartPolicy"] == "Never"
    # Bad input (2) and too many rejected rows (3) are not retried.
    ctr = container(cronjob)
    not_retried = set()
    for rule in job["podFailurePolicy"]["rules"]:
        if rule["action"] in ("FailJob", "FailIndex") and "onExitCodes" in rule:
            assert rule["onExitCodes"]["containerName"] == ctr["name"]
            assert rule["onExitCodes"]["operator"] == "In"
            not_retried |= set(rule["onExitCodes"]["values"])
    assert {2, 3} <= not_retried
    assert 1 not in not_retried  # I/O errors are worth a retry
    if name == "batch-predict":
        assert _weekly(spec["schedule"]), spec["schedule"]


def test_batch_predict_is_an_indexed_job_of_shard_count_pods(objects, overlay):
    contract = job_contract(objects, "batch-predict")
    assert contract.argv == ["python", "-m", "jobs.batch_predict"]
    assert contract.completion_mode == "Indexed"
    assert contract.completions == contract.parallelism == SHARDS[overlay]
    assert int(contract.env["BENTOS_SHARD_COUNT"]) == contract.completions
    for key in ("BENTOS_BATCH_INPUT", "BENTOS_BATCH_OUTPUT", "BENTOS_BATCH_MODEL"):
        assert contract.env[key], key
    assert contract.env["BENTOS_BATCH_MODEL"] in ("rf", "edge")
    assert 0 <= float(contract.env["BENTOS_BATCH_MAX_REJECT_FRACTION"]) <= 1
    assert int(contract.env["BENTOS_BATCH_CHUNK_ROWS"]) > 0
    # `jobs` is importable from the Bento's source folder, where the command runs.
    assert contract.working_dir == "/home/bentoml/bento/src"
    assert contract.env_for_index(contract.completions - 1)["JOB_COMPLETION_INDEX"] == str(
        contract.completions - 1
    )
    job = one(objects, "CronJob", "batch-predict")["spec"]["jobTemplate"]["spec"]
    # Per-index retries may not exceed the Job's total budget.
    assert job.get("backoffLimitPerIndex", 0) <= job["backoffLimit"]


def test_retrain_trains_the_forest_only(objects):
    contract = job_contract(objects, "retrain")
    assert contract.argv == ["python", "-m", "jobs.retrain", "--models", "rf"]
    assert contract.completions == 1
    for key in ("BENTOS_RETRAIN_DATA", "BENTOS_RETRAIN_TARGET", "BENTOS_RETRAIN_EXPORT"):
        assert contract.env[key], key
    assert contract.working_dir == "/home/bentoml/bento/src"


def test_object_store_credentials_come_from_a_secret_reference_only(objects):
    for cronjob in find(objects, "CronJob"):
        ctr = container(cronjob)
        refs = [s["secretRef"] for s in ctr.get("envFrom", []) if "secretRef" in s]
        assert refs == [{"name": "bentos-object-store", "optional": True}]
        for item in ctr.get("env", []):
            if re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", item["name"]):
                assert "value" not in item, item["name"]
    assert not find(objects, "Secret")


# --- policy scan ------------------------------------------------------------------------------


def test_checkov_finds_no_failed_checks(rendered, tmp_path):
    for overlay in OVERLAYS:
        (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(rendered[overlay]))
    proc = subprocess.run(
        [
            tool("checkov"),
            "--directory",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--compact",
            "--quiet",
            # Offline: no guideline download, no platform.
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "WARNING"},
    )
    assert proc.stdout.strip(), proc.stderr
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    (report,) = [r for r in reports if r.get("check_type") == "kubernetes"]
    summary = report["summary"]
    failed = [
        (c["check_id"], c["resource"], c["check_name"])
        for c in report["results"].get("failed_checks", [])
    ]
    assert failed == [] and summary["failed"] == 0, failed
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 100 and summary["resource_count"] >= 20
    # A suppression carries its reason, written next to the object.
    for check in report["results"].get("skipped_checks", []):
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 30, (check["check_id"], check["resource"], reason)
    assert proc.returncode == 0, proc.stderr


# --- contract: run the rendered Deployment ----------------------------------------------------


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class DeclaredServer(Server):
    """conftest.Server, started as a rendered Deployment declares it rather than on a free port.

    The Deployment has no command or args: the image's entrypoint runs `bentoml serve
    $BENTO_PATH` from WORKDIR $BENTO_PATH, and BentoML runs the service from the Bento's src/.
    Here `bentoml serve .` from the repo root (the same files) stands in for it. The port is the
    one BentoML takes from BENTOML_CONFIG, with no --port; only --host is narrowed to loopback.
    """

    def __init__(self, env: dict[str, str], port: int, override_port: bool):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        fd, log = tempfile.mkstemp(prefix="bentoml-k8s-serve-", suffix=".log")
        os.close(fd)
        self.log = Path(log)
        args = ["--port", str(port)] if override_port else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", ".", "--host", "127.0.0.1", *args],
            cwd=ROOT,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _declared_env(
    objects: list[dict], tmp: Path, bentoml_home: Path, trained
) -> tuple[dict[str, str], dict[str, str]]:
    """(environment to run with, environment as declared): the server container's, its
    mounted ConfigMap files written under `tmp`."""
    dep = deployment(objects)
    ctr = server(objects)
    declared = resolve_env(objects, ctr)
    remap: dict[str, Path] = {}
    for mount_path, files in mounted_files(objects, dep, ctr).items():
        folder = tmp / mount_path.strip("/").replace("/", "_")
        folder.mkdir(parents=True)
        for name, content in files.items():
            (folder / name).write_text(content)
        remap[mount_path] = folder
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BENTOS_", "BENTOML_CONFIG", "BENTOML_PORT", "BENTOML_HOST", "PORT"))
    }
    for key, value in declared.items():
        for mount_path, folder in remap.items():
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                value = str(folder / value[len(mount_path) :].lstrip("/"))
        env[key] = value
    # The emptyDir BENTOML_HOME of the pod would hold no models: in the image they are the
    # Bento's own ($BENTO_PATH/models), pinned at build. Here the session's store stands in, with
    # the session's models pinned (other tests register newer versions).
    env["BENTOML_HOME"] = str(bentoml_home)
    env.setdefault("BENTOS_RF_MODEL", trained.rf_tag)
    env.setdefault("BENTOS_TFLITE_MODEL", trained.tflite_tag)
    # /tmp is an emptyDir of the pod's own.
    private_tmp = tmp / "tmp"
    private_tmp.mkdir()
    env["TMPDIR"] = str(private_tmp)
    return env, declared


def test_rendered_deployment_serves_its_probes(rendered, trained, bentoml_home, tmp_path):
    objects = rendered["prod"]
    ctr = server(objects)
    declared_port = container_port(ctr, "http")
    env, declared = _declared_env(objects, tmp_path, bentoml_home, trained)
    # Port 3000 may be taken on a developer's machine (`make run`): then, and only then, the
    # same server is started on a free port with --port; the config's port is checked above.
    free = _port_is_free(declared_port)
    port = declared_port if free else free_port()
    srv = DeclaredServer(env, port, override_port=not free)
    try:
        startup = ctr["startupProbe"]
        budget = startup.get("initialDelaySeconds", 0) + startup.get(
            "periodSeconds", 10
        ) * startup.get("failureThreshold", 3)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + min(budget, 120)
        status = None
        while time.monotonic() < deadline:
            assert srv.proc.poll() is None, f"server exited:\n{srv.output()}"
            try:
                status = httpx.get(url + startup["httpGet"]["path"], timeout=3).status_code
                if status == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        assert status == 200, f"startup probe never passed:\n{srv.output()}"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = ctr[probe]["httpGet"]
            assert container_port(ctr, get["port"]) == declared_port
            timeout = ctr[probe].get("timeoutSeconds", 1)
            assert httpx.get(url + get["path"], timeout=timeout).status_code == 200, probe
        # The ConfigMap's settings reached the service: one row over BENTOS_MAX_ROWS is a 400.
        max_rows = int(declared["BENTOS_MAX_ROWS"])
        row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        ok = httpx.post(url + "/predict", json={"instances": [row]}, timeout=30)
        assert ok.status_code == 200, ok.text
        too_many = httpx.post(
            url + "/predict", json={"instances": [row] * (max_rows + 1)}, timeout=30
        )
        assert too_many.status_code == 400, too_many.text
        assert f"at most {max_rows} are allowed" in too_many.text
        # BENTOML_CONFIG reached BentoML: as many workers as it says.
        workers = service_config(objects)["workers"]
        initialized = f"Service {APP} initialized"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _log(srv).count(initialized) < workers:
            time.sleep(0.3)
        assert _log(srv).count(initialized) == workers, srv.output()
        assert f"user config override from path: {env['BENTOML_CONFIG']}" in _log(srv)
    finally:
        srv.stop()


def _log(srv: Server) -> str:
    return srv.log.read_text(errors="replace")


def test_overlays_write_batch_output_to_different_folders(rendered):
    """An output folder belongs to one shard count (docs/batch.md): dev's 2 and prod's 4 shards
    must not share one."""
    outputs = {o: job_contract(rendered[o]).env["BENTOS_BATCH_OUTPUT"] for o in OVERLAYS}
    assert len(set(outputs.values())) == len(OVERLAYS), outputs


@pytest.mark.parametrize("overlay_name", OVERLAYS)
def test_rendered_batch_cronjob_shards_cover_the_input_exactly_once(
    rendered, trained, bentoml_home, tmp_path, overlay_name
):
    """Run what the CronJob declares, once per completion index as an Indexed Job would:
    its command, with its env (ConfigMap values resolved). Only what cannot exist here is
    replaced: the repo root stands in for the image's working dir, local folders for the
    bucket, and the test's model store for the Bento's."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bentos.data import load_builtin

    contract = job_contract(rendered[overlay_name], "batch-predict")
    assert contract.argv[:3] == ["python", "-m", "jobs.batch_predict"]
    assert contract.completion_mode == "Indexed"
    features = load_builtin("iris").features
    inp = tmp_path / "in"
    inp.mkdir()
    for k in range(3):  # several files and row groups, so every shard has work
        table = pa.Table.from_pandas(
            features.sample(frac=1.0, random_state=k), preserve_index=False
        )
        pq.write_table(table, inp / f"part-{k}.parquet", row_group_size=25)
    out = tmp_path / "out"
    for index in range(contract.completions):
        env = {
            **os.environ,
            **contract.env_for_index(index),
            "BENTOML_HOME": str(bentoml_home),
            "BENTOS_RF_MODEL": trained.rf_tag,  # pinned: other tests register newer versions
            "BENTOS_BATCH_INPUT": str(inp),
            "BENTOS_BATCH_OUTPUT": str(out),
        }
        proc = subprocess.run(
            [sys.executable, *contract.argv[1:]],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    manifests = sorted(out.glob("_SUCCESS-*.json"))
    assert len(manifests) == contract.completions
    parts = pd.concat([pd.read_parquet(p) for p in sorted(out.glob("part-*.parquet"))])
    assert len(parts) == 3 * len(features)
    assert not parts.duplicated(["source_file", "source_row"]).any()
    assert all(json.loads(m.read_text())["rows_written"] > 0 for m in manifests)


def test_rendered_grpc_container_serves_its_probes(rendered, trained, bentoml_home, tmp_path):
    """Run the gRPC container as the prod Deployment declares it (command, args, env from the
    ConfigMaps; the repo root stands in for its workingDir) and call what its probes call,
    grpc.health.v1 on the declared port, then one inference."""
    import grpc
    import numpy as np
    import tritonclient.grpc as tgrpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    objects = rendered["prod"]
    ctr = container(deployment(objects), "grpc")
    declared_port = container_port(ctr, "grpc")
    argv = [*ctr["command"], *(ctr.get("args") or [])]
    assert argv[argv.index("--port") + 1] == str(declared_port)
    port = declared_port if _port_is_free(declared_port) else free_port()
    argv[argv.index("--port") + 1] = str(port)
    env = {
        **os.environ,
        **resolve_env(objects, ctr),
        "BENTOML_HOME": str(bentoml_home),
        "BENTOS_RF_MODEL": trained.rf_tag,  # pinned: other tests register newer versions
        "BENTOS_TFLITE_MODEL": trained.tflite_tag,
    }
    log = tmp_path / "grpc.log"
    proc = subprocess.Popen(
        [sys.executable, *argv[1:]],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 120
            status = None
            while time.monotonic() < deadline and status != health_pb2.HealthCheckResponse.SERVING:
                assert proc.poll() is None, log.read_text()
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3).status
                except grpc.RpcError:
                    time.sleep(0.3)
            assert status == health_pb2.HealthCheckResponse.SERVING, log.read_text()
        client = tgrpc.InferenceServerClient(f"127.0.0.1:{port}")
        x = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
        inp = tgrpc.InferInput("features", [1, 4], "FP32")
        inp.set_data_from_numpy(x)
        assert client.infer("rf", [inp]).as_numpy("label").tolist() == [0]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
