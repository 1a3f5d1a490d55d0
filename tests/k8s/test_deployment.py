"""The online service as rendered: the Deployment's two containers (`bentoml serve` on 3000,
the gRPC server on 3001), their probes and settings, BentoML's configuration (the base's file,
and dev's overrides of two of its keys), the Service, the disruption budget, the network policy
and the autoscaler that prod adds as a component.
"""

from __future__ import annotations

import pytest
import yaml

from tests.support.k8s import (
    APP,
    K8S,
    PULL_MODELS,
    all_containers,
    bentoml_config,
    bentoml_overrides,
    container,
    container_port,
    deployment,
    find,
    kustomization,
    one,
    pod_fields,
    pod_template,
    resolve_env,
    server_container,
    service_config,
)


def serving_ports(objects: list[dict]) -> dict[str, int]:
    """Port name -> number, for every port a container of the server pod declares."""
    return {
        p["name"]: p["containerPort"]
        for c in pod_template(deployment(objects))["spec"]["containers"]
        for p in c.get("ports") or []
    }


def test_server_runs_the_image_default_command_on_port_3000(objects):
    ctr = server_container(objects)
    # The Bento image's entrypoint serves the Bento (`bentoml serve $BENTO_PATH`) when the
    # container has no command and no args.
    assert "command" not in ctr and "args" not in ctr
    assert [(p["name"], p["containerPort"], p.get("protocol", "TCP")) for p in ctr["ports"]] == [
        ("http", 3000, "TCP")
    ]
    # The port BentoML listens on (its config) is the declared one.
    assert service_config(objects)["http"]["port"] == 3000


def test_probes_paths_ports_and_startup_budget(objects):
    ctr = server_container(objects)
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


# The settings class of the process each rendered container runs (bentos/settings.py), init
# containers included: `bentos models pull` (k8s/components/registry) reads ModelSettings, which
# has BENTOS_REGISTRY.
_PROCESS_SETTINGS = {
    ("Deployment", "server"): ("ServingSettings", "PredictionLogSettings"),
    ("Deployment", "grpc"): ("GrpcSettings", "ServingSettings", "PredictionLogSettings"),
    ("Deployment", PULL_MODELS): ("ModelSettings",),
    ("CronJob", "batch-predict"): ("BatchSettings", "PredictionLogSettings"),
    ("CronJob", PULL_MODELS): ("ModelSettings",),
    ("CronJob", "retrain"): ("RetrainSettings",),
    ("CronJob", "monitor"): ("MonitorSettings",),
}


def test_every_container_sets_only_its_process_settings_and_they_parse(objects, monkeypatch):
    """Every BENTOS_* variable a container gets (ConfigMaps, env, the downward API's namespace)
    is one its process reads, and every value parses."""
    from bentos import settings

    for obj in [*find(objects, "Deployment"), *find(objects, "CronJob")]:
        for ctr in all_containers(obj):
            # The gRPC server's models and limits are the service's; the servers and the batch
            # job read the prediction log's settings too.
            classes = [getattr(settings, n) for n in _PROCESS_SETTINGS[(obj["kind"], ctr["name"])]]
            known = set().union(*(settings.variables(c).values() for c in classes))
            env = resolve_env(objects, ctr, fields=pod_fields(obj))
            declared = {k for k in env if k.startswith("BENTOS_")}
            assert declared <= known, (ctr["name"], declared - known)
            for key in settings.every_variable():
                monkeypatch.delenv(key, raising=False)
            for key in declared:
                monkeypatch.setenv(key, env[key])
            for cls in classes:
                settings.load(cls)  # every value parses, or a SettingsError names it
    server_env = resolve_env(objects, server_container(objects))
    assert {"BENTOS_MAX_ROWS", "BENTOS_MAX_BODY_BYTES"} <= set(server_env)


def _unknown_keys(ours: dict, theirs: dict, at: str = "") -> list[str]:
    bad = []
    for key, value in ours.items():
        if key not in theirs:
            bad.append(at + key)
        elif isinstance(value, dict) and isinstance(theirs[key], dict):
            bad += _unknown_keys(value, theirs[key], f"{at}{key}.")
    return bad


def test_bentoml_config_and_its_overrides_use_known_keys_only(objects):
    """BentoML accepts unknown keys silently (a misspelt `worker:` would do nothing), in its
    config file and in BENTOML_CONFIG_OVERRIDES alike: every key must be one of its own."""
    from bentoml._internal.configuration.containers import get_default_config

    defaults = get_default_config(version=2)["services"]
    path, config = bentoml_config(objects)
    assert path.endswith((".yaml", ".yml"))  # BentoML refuses other names
    for source in (config, bentoml_overrides(objects) or {"services": {APP: {}}}):
        assert "version" not in source  # BentoML 1.4 reads it as its v2 schema
        assert set(source) == {"services"} and set(source["services"]) == {APP}
        assert _unknown_keys(source["services"][APP], defaults) == []
    assert service_config(objects)["workers"] >= 1


@pytest.mark.parametrize(("overlay_name", "workers"), [("dev", 1), ("prod", 2)])
def test_dev_overrides_one_key_of_the_base_bentoml_config(rendered, overlay_name, workers):
    """Every overlay mounts the base's file unchanged; dev sets only the workers over it, and
    keeps the rest (timeout, port) from the file."""
    objects = rendered[overlay_name]
    base_file = yaml.safe_load((K8S / "base" / "bentoml_configuration.yaml").read_text())
    assert bentoml_config(objects)[1] == base_file
    overrides = bentoml_overrides(objects)
    if overlay_name == "dev":
        assert overrides == {"services": {APP: {"workers": workers}}}
    else:
        assert overrides == {}
    config = service_config(objects)
    assert config["workers"] == workers
    assert "max_concurrency" not in config["traffic"]  # the service's own limit, per worker
    assert config["traffic"]["timeout"] == base_file["services"][APP]["traffic"]["timeout"]
    assert config["http"] == base_file["services"][APP]["http"]


def test_graceful_termination_outlasts_prestop_and_request_timeout(objects):
    spec = pod_template(deployment(objects))["spec"]
    pre_stop = server_container(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and len(pre_stop) == 2, pre_stop
    timeout = service_config(objects)["traffic"]["timeout"]
    assert spec["terminationGracePeriodSeconds"] > int(pre_stop[1]) + timeout


def test_deployment_rolls_without_dropping_below_its_replicas_and_spreads(objects):
    dep = deployment(objects)
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = pod_template(dep)["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    spread = pod_template(dep)["spec"]["topologySpreadConstraints"]
    assert "kubernetes.io/hostname" in {c["topologyKey"] for c in spread}
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()


def test_service_is_clusterip_with_named_ports_onto_the_pod(objects):
    svc = one(objects, "Service", APP)
    assert svc["spec"]["type"] == "ClusterIP"
    labels = pod_template(deployment(objects))["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    by_name = {p["name"]: p for p in svc["spec"]["ports"]}  # every port named
    assert len(by_name) == len(svc["spec"]["ports"])
    assert by_name["http"]["appProtocol"] == "http"
    assert container_port(server_container(objects), by_name["http"]["targetPort"]) == 3000
    serving = serving_ports(objects)
    for port in svc["spec"]["ports"]:
        assert port["appProtocol"], port["name"]
        target = port["targetPort"]
        assert target in serving.values() or target in serving, port["name"]


def test_grpc_container_port_service_and_grpc_probes(objects):
    grpc_ctr = container(deployment(objects), "grpc")
    assert grpc_ctr["image"] == server_container(objects)["image"]
    assert grpc_ctr["command"][:3] == ["python", "-m", "bentos.serving.grpc"]
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
    # Exactly the ports the pod serves: 3000 (HTTP), 3001 (gRPC) and 3002 (gRPC's metrics).
    assert ports == {("TCP", port) for port in serving_ports(objects).values()}
    assert ports == {("TCP", 3000), ("TCP", 3001), ("TCP", 3002)}
    # The jobs' pods get a policy too, with no ingress at all.
    jobs = one(objects, "NetworkPolicy", f"{APP}-jobs")
    assert "ingress" not in jobs["spec"] and jobs["spec"]["policyTypes"] == ["Ingress"]
    for cronjob in find(objects, "CronJob"):
        pod_labels = pod_template(cronjob)["metadata"]["labels"]
        for expr in jobs["spec"]["podSelector"]["matchExpressions"]:
            assert pod_labels[expr["key"]] in expr["values"]


def test_the_autoscaling_component_owns_prods_replica_count(objects, overlay):
    """Prod includes k8s/components/autoscaling: an HPA on the Deployment, and no
    spec.replicas for `kubectl apply` to reset; dev runs its one fixed replica."""
    component = kustomization(K8S / "components" / "autoscaling")
    assert component["kind"] == "Component"
    included = "../../components/autoscaling" in (kustomization(overlay).get("components") or [])
    hpas = find(objects, "HorizontalPodAutoscaler")
    dep = deployment(objects)
    if overlay == "prod":
        assert included
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
        assert not included and hpas == []
        assert dep["spec"]["replicas"] == 1
