"""Render the kustomize overlays under k8s/ and read what they declare, for tests/k8s/ and for
tests that run a rendered workload's command (see `job_contract`).

Rendering uses the machine's `kubectl kustomize` (KUBECTL overrides the path). The policy tools
(kubernetes-validate, checkov) live in their own venv, `.venv/tools` (TOOLS_BIN overrides it):
checkov pins older versions of packages the service's venv also pins.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
POD_KINDS = ("Deployment", "CronJob")
APP = "tabular-classifier"  # the Deployment, its Service, and the BentoML service's name
SERVING_IMAGE = APP  # bentofile.yaml: the Deployment and the batch CronJob
TRAINING_IMAGE = f"{APP}-train"  # bentofile-train.yaml (with TensorFlow): the retrain CronJob
PULL_MODELS = "pull-models"  # the registry component's init container
# The Prometheus Operator's kinds (k8s/components/monitoring): custom resources, which the
# Kubernetes schemas of kubernetes-validate do not know; tests/k8s/test_monitoring.py validates
# them against the operator's CRD schemas instead.
OPERATOR_API = "monitoring.coreos.com/v1"
OPERATOR_KINDS = ("PodMonitor", "PrometheusRule")
DASHBOARD = f"{APP}-dashboard"  # the monitoring component's Grafana ConfigMap (unhashed)


def kubectl() -> str:
    """The kubectl binary; an AssertionError (a failure, never a skip) when there is none."""
    path = os.environ.get("KUBECTL") or shutil.which("kubectl")
    assert path and Path(path).exists(), (
        "kubectl (with built-in kustomize) is needed to render k8s/; install it or set KUBECTL"
    )
    return path


def tool(name: str) -> str:
    """A tool of the tools venv (`make tools`), or of PATH; an AssertionError when missing."""
    bin_dir = Path(os.environ.get("TOOLS_BIN", ROOT / ".venv" / "tools" / "bin"))
    path = bin_dir / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is missing: run `make tools` (installs it into {bin_dir})"
    return found


def render_text(path: str | os.PathLike[str]) -> str:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return proc.stdout


def render(overlay: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The objects of `k8s/overlays/<overlay>` (or of a kustomization folder), as kubectl
    would apply them."""
    path = Path(overlay)
    if not path.is_absolute() and not path.exists():
        path = K8S / "overlays" / str(overlay)
    return [d for d in yaml.safe_load_all(render_text(path)) if d]


def builtin(objects: list[dict]) -> list[dict]:
    """The objects of Kubernetes' own kinds: all but the Prometheus Operator's."""
    return [o for o in objects if o["apiVersion"] != OPERATOR_API]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_template(obj: dict) -> dict:
    """The pod template of a Deployment or a CronJob."""
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return obj["spec"]["template"]


def pod_templates(objects: list[dict]) -> list[tuple[dict, dict]]:
    return [(o, pod_template(o)) for o in objects if o["kind"] in POD_KINDS]


def container(obj: dict, name: str | None = None) -> dict:
    containers = pod_template(obj)["spec"]["containers"]
    if name is None:
        assert len(containers) == 1, [c["name"] for c in containers]
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def init_containers(obj: dict) -> list[dict]:
    return list(pod_template(obj)["spec"].get("initContainers") or [])


def init_container(obj: dict, name: str) -> dict:
    found = [c for c in init_containers(obj) if c["name"] == name]
    assert len(found) == 1, f"{obj['metadata']['name']} has no init container {name}"
    return found[0]


def all_containers(obj: dict) -> list[dict]:
    """Every container of the pod template, init containers first (the order they run in)."""
    return [*init_containers(obj), *pod_template(obj)["spec"]["containers"]]


def components(folder: str | os.PathLike[str]) -> list[Path]:
    """The components a kustomization lists, as resolved folders."""
    path = Path(folder)
    if not path.is_absolute():
        path = K8S / "overlays" / str(folder)
    listed = kustomization(path).get("components") or []
    return [(path / c).resolve() for c in listed]


def includes_component(folder: str | os.PathLike[str], component: str) -> bool:
    """Whether the kustomization lists k8s/components/<component>."""
    return (K8S / "components" / component).resolve() in components(folder)


def config_map_data(objects: list[dict], name: str) -> dict[str, str]:
    return dict(one(objects, "ConfigMap", name).get("data") or {})


def resolve_env(
    objects: list[dict],
    ctr: dict,
    secrets: dict[str, dict[str, str]] | None = None,
    *,
    fields: dict[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: envFrom in order, then env (which
    wins). ConfigMaps come from the rendered objects. Secrets are never in the repo: `secrets`
    stands for those created out of band (docs/deploy.md); an optional secretRef to one that is
    not there adds nothing, a required one is an error. `fields` (fieldPath -> value, e.g.
    `pod_fields(obj)`) stands for the downward API's values; a fieldRef it lacks is left out."""
    secrets = secrets or {}
    fields = fields or {}
    env: dict[str, str] = {}
    for source in ctr.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]
            if not find(objects, "ConfigMap", ref["name"]) and ref.get("optional"):
                continue
            for key, value in config_map_data(objects, ref["name"]).items():
                env[prefix + key] = value
        elif "secretRef" in source:
            name = source["secretRef"]["name"]
            if name in secrets:
                env.update({prefix + k: v for k, v in secrets[name].items()})
            else:
                assert source["secretRef"].get("optional"), (
                    f"secretRef {name} must be optional to run it without the Secret"
                )
        else:
            raise AssertionError(f"unknown envFrom source {source}")
    for item in ctr.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = config_map_data(objects, ref["name"])[ref["key"]]
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            if ref["key"] in secrets.get(ref["name"], {}):
                env[item["name"]] = secrets[ref["name"]][ref["key"]]
            else:
                assert ref.get("optional"), item
        elif "fieldRef" in item.get("valueFrom", {}):
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            if path in fields:
                env[item["name"]] = fields[path]
        # resourceFieldRef, and fieldRefs not in `fields`: the cluster's own values.
    return env


def pod_fields(obj: dict) -> dict[str, str]:
    """The downward API's fields of a pod of `obj` that are known before it runs."""
    return {"metadata.namespace": obj["metadata"].get("namespace", "default")}


def mounted_files(objects: list[dict], obj: dict, ctr: dict) -> dict[str, dict[str, str]]:
    """mountPath -> {file name: content} for each ConfigMap the container mounts."""
    volumes = {v["name"]: v for v in pod_template(obj)["spec"].get("volumes") or []}
    files: dict[str, dict[str, str]] = {}
    for mount in ctr.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = config_map_data(objects, volume["configMap"]["name"])
            items = volume["configMap"].get("items")
            if items:
                data = {i["path"]: data[i["key"]] for i in items}
            files[mount["mountPath"]] = data
    return files


def container_port(ctr: dict, port: int | str) -> int:
    """A probe's or Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        assert any(p["containerPort"] == port for p in ctr.get("ports") or []), port
        return port
    return next(p["containerPort"] for p in ctr["ports"] if p.get("name") == port)


@dataclass
class JobContract:
    """What one pod of a rendered CronJob runs: run `command + args` in `working_dir` (the Bento's
    source folder in the image; the repo root here) with `env`, once per completion index, with
    JOB_COMPLETION_INDEX set to the index (Kubernetes sets it in Indexed Jobs)."""

    command: list[str]
    args: list[str]
    env: dict[str, str]
    completions: int
    parallelism: int
    completion_mode: str
    working_dir: str | None
    mounts: dict[str, str] = field(default_factory=dict)  # mountPath -> volume kind

    @property
    def argv(self) -> list[str]:
        return [*self.command, *self.args]

    def env_for_index(self, index: int) -> dict[str, str]:
        assert 0 <= index < self.completions, index
        return {**self.env, "JOB_COMPLETION_INDEX": str(index)}


@dataclass
class ContainerContract:
    """What one container of a rendered pod runs (an init container, say): `command + args` in
    `working_dir` with `env`; `mounts` is mountPath -> the pod volume's name."""

    command: list[str]
    args: list[str]
    env: dict[str, str]
    working_dir: str | None
    mounts: dict[str, str] = field(default_factory=dict)

    @property
    def argv(self) -> list[str]:
        return [*self.command, *self.args]


def container_contract(objects: list[dict], obj: dict, name: str) -> ContainerContract:
    """The contract of the container or init container `name` of `obj`'s pod template."""
    (ctr,) = [c for c in all_containers(obj) if c["name"] == name]
    return ContainerContract(
        command=list(ctr.get("command") or []),
        args=list(ctr.get("args") or []),
        env=resolve_env(objects, ctr, fields=pod_fields(obj)),
        working_dir=ctr.get("workingDir"),
        mounts={m["mountPath"]: m["name"] for m in ctr.get("volumeMounts") or []},
    )


def job_contract(objects: list[dict], cronjob: str = "batch-predict") -> JobContract:
    """(command, args, env, completions, ...) of the rendered CronJob `cronjob`.

    env is resolved from the rendered ConfigMaps (see `resolve_env`); paths in it (BENTOML_HOME)
    are the container's: point them at temporary folders to run the command on this machine.
    """
    obj = one(objects, "CronJob", cronjob)
    job = obj["spec"]["jobTemplate"]["spec"]
    ctr = container(obj)
    volumes = {v["name"]: v for v in pod_template(obj)["spec"].get("volumes") or []}
    mounts = {
        m["mountPath"]: next(k for k in volumes[m["name"]] if k != "name")
        for m in ctr.get("volumeMounts") or []
    }
    completions = int(job.get("completions", 1))
    return JobContract(
        command=list(ctr.get("command") or []),
        args=list(ctr.get("args") or []),
        env=resolve_env(objects, ctr),
        completions=completions,
        parallelism=int(job.get("parallelism", 1)),
        completion_mode=job.get("completionMode", "NonIndexed"),
        working_dir=ctr.get("workingDir"),
        mounts=mounts,
    )


# --- the online service ------------------------------------------------------------------------


def deployment(objects: list[dict]) -> dict:
    return one(objects, "Deployment", APP)


def server_container(objects: list[dict]) -> dict:
    """The Deployment's `server` container (`bentoml serve`)."""
    return container(deployment(objects), "server")


def kustomization(folder: str | os.PathLike[str]) -> dict:
    """The kustomization.yaml of `k8s/overlays/<folder>`, or of a folder of k8s/."""
    path = Path(folder)
    if not path.is_absolute():
        path = K8S / "overlays" / str(folder)
    return yaml.safe_load((path / "kustomization.yaml").read_text())


def bentoml_config(objects: list[dict]) -> tuple[str, dict]:
    """(path in the container, parsed content) of the file that BENTOML_CONFIG names."""
    ctr = server_container(objects)
    path = resolve_env(objects, ctr)["BENTOML_CONFIG"]
    for mount_path, files in mounted_files(objects, deployment(objects), ctr).items():
        for name, content in files.items():
            if f"{mount_path.rstrip('/')}/{name}" == path:
                return path, yaml.safe_load(content)
    raise AssertionError(f"BENTOML_CONFIG={path} is not a file of a mounted ConfigMap")


def bentoml_overrides(objects: list[dict]) -> dict:
    """BENTOML_CONFIG_OVERRIDES of the server container, parsed: the JSON that BentoML 1.4
    deep-merges over the BENTOML_CONFIG file ({} when it is not set)."""
    env = resolve_env(objects, server_container(objects))
    # The older dotted form is deprecated in BentoML 1.4 and parsed differently: not used here.
    assert "BENTOML_CONFIG_OPTIONS" not in env, "use BENTOML_CONFIG_OVERRIDES (JSON)"
    return json.loads(env.get("BENTOML_CONFIG_OVERRIDES") or "{}")


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def service_config(objects: list[dict]) -> dict:
    """The BentoML service's settings the server runs with: the BENTOML_CONFIG file's
    `services.tabular-classifier`, with BENTOML_CONFIG_OVERRIDES merged over it as BentoML
    merges them (deep: a key it does not name keeps the file's value)."""
    merged = _deep_merge(bentoml_config(objects)[1], bentoml_overrides(objects))
    return merged["services"][APP]


# --- the policy tools --------------------------------------------------------------------------


def validate_strictly(paths: list[str | os.PathLike[str]], version: str) -> tuple[int, str]:
    """(exit status, output) of `kubernetes-validate --strict` against Kubernetes `version`."""
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", version, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


def checkov(folder: str | os.PathLike[str]) -> dict:
    """checkov's Kubernetes report over the YAML files of `folder`, offline (no guideline
    download, no platform), with every passed and skipped check listed."""
    proc = subprocess.run(
        [
            tool("checkov"),
            "--directory",
            str(folder),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--compact",
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
    report["returncode"] = proc.returncode
    report["stderr"] = proc.stderr
    return report


_VERBS = {"GET": "get", "PATCH": "patch", "PUT": "update", "DELETE": "delete", "POST": "create"}
_PATH = re.compile(
    r"/apis/(?P<group>[^/]+)/[^/]+/namespaces/(?P<namespace>[^/]+)/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/?]+))?"
)


def api_request(method: str, path: str) -> dict[str, str]:
    """A request to the API server as RBAC sees it: verb, group, namespace, resource and name
    (empty for a create, which names no existing object)."""
    match = _PATH.fullmatch(path)
    assert match, path
    return {"verb": _VERBS[method], **{k: v or "" for k, v in match.groupdict().items()}}


def role_allows(
    role: dict, verb: str, group: str, resource: str, name: str = "", namespace: str = ""
) -> bool:
    """Whether one of the Role's rules allows the request (in the Role's namespace). RBAC
    matches resourceNames against the request's name, and a `create` has none: a rule with
    resourceNames never allows one."""
    if namespace and namespace != role["metadata"]["namespace"]:
        return False
    return any(
        verb in r["verbs"]
        and group in r["apiGroups"]
        and resource in r["resources"]
        and (not r.get("resourceNames") or (name and name in r["resourceNames"]))
        for r in role["rules"]
    )
