"""The rendered workloads, run from the source tree as their manifests declare them: the
Deployment's server (its environment and ConfigMaps, BENTOML_CONFIG and its overrides, its port)
answers its probes with the ConfigMap's settings and as many workers as its BentoML config says;
its gRPC container answers grpc.health.v1 and an inference; the batch CronJob's shards, one run
per completion index, cover the input exactly once; with the registry component, the init
container `pull-models` imports each champion into the BENTOML_HOME it is given, and the gRPC
container serves the champions from there.

Only what cannot exist outside a cluster is replaced: the repo root stands in for the image's
source folder, temporary folders for the pod's mounts and the bucket, the session's model store
(tests/conftest.py) for the models packed in the Bento.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from benchmarks.servers import ROOT, Process, free_port, grpc_ready
from tests.support.k8s import (
    APP,
    OVERLAYS,
    PULL_MODELS,
    bentoml_overrides,
    container,
    container_contract,
    container_port,
    deployment,
    includes_component,
    job_contract,
    mounted_files,
    one,
    resolve_env,
    server_container,
    service_config,
)

# The overlay with the registry component (k8s/components/registry): prod.
(REGISTRY_OVERLAY,) = [o for o in OVERLAYS if includes_component(o, "registry")]


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _declared_env(objects: list[dict], tmp: Path, pinned: dict[str, str]) -> dict[str, str]:
    """The server container's environment, to run it here: its mounted ConfigMap files written
    under `tmp` (paths into them rewritten), its emptyDir /tmp a folder of its own, and no
    BENTOML_HOME, so that the `serve` fixture gives it a home sharing the session's models."""
    ctr = server_container(objects)
    remap: dict[str, Path] = {}
    for mount_path, files in mounted_files(objects, deployment(objects), ctr).items():
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
    for key, value in resolve_env(objects, ctr).items():
        for mount_path, folder in remap.items():
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                value = str(folder / value[len(mount_path) :].lstrip("/"))
        env[key] = value
    # In the image the models are the Bento's own ($BENTO_PATH/models), pinned at build.
    env.pop("BENTOML_HOME")
    for key, tag in pinned.items():
        env.setdefault(key, tag)
    (tmp / "tmp").mkdir()
    env["TMPDIR"] = str(tmp / "tmp")
    return env


def _log(srv: Process) -> str:
    return srv.log.read_text(errors="replace")


def _wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        time.sleep(0.3)


@pytest.mark.parametrize("overlay_name", OVERLAYS)
def test_rendered_server_answers_its_probes_with_its_settings_and_workers(
    rendered, serve, pinned, tmp_path, overlay_name
):
    objects = rendered[overlay_name]
    ctr = server_container(objects)
    declared_port = container_port(ctr, "http")
    env = _declared_env(objects, tmp_path, pinned)
    # Port 3000 may be taken on a developer's machine (`make run`): then, and only then, the
    # same server is started on a free port with --port; the config's port is checked in
    # test_deployment.py. Otherwise it is started as the Deployment declares it: the image's
    # entrypoint runs `bentoml serve $BENTO_PATH` with no --port (BentoML takes it from
    # BENTOML_CONFIG); `bentoml serve .` from the repo root, the same files, stands in for it,
    # with only --host narrowed to loopback.
    free = _port_is_free(declared_port)
    port = declared_port if free else free_port()
    startup = ctr["startupProbe"]
    budget = startup.get("initialDelaySeconds", 0) + startup.get("periodSeconds", 10) * startup.get(
        "failureThreshold", 3
    )
    srv = serve(env, port=port, pass_port=not free, inherit=False)
    try:
        srv.wait_ready(timeout=min(budget, 180))
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = ctr[probe]["httpGet"]
            assert container_port(ctr, get["port"]) == declared_port
            timeout = ctr[probe].get("timeoutSeconds", 1)
            assert httpx.get(srv.url + get["path"], timeout=timeout).status_code == 200, probe
        # The ConfigMap's settings reached the service: one row over BENTOS_MAX_ROWS is a 400.
        max_rows = int(env["BENTOS_MAX_ROWS"])
        row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        ok = httpx.post(srv.url + "/predict", json={"instances": [row]}, timeout=30)
        assert ok.status_code == 200, ok.text
        too_many = httpx.post(
            srv.url + "/predict", json={"instances": [row] * (max_rows + 1)}, timeout=30
        )
        assert too_many.status_code == 400, too_many.text
        assert f"at most {max_rows} are allowed" in too_many.text
        # BENTOML_CONFIG, and dev's BENTOML_CONFIG_OVERRIDES over it, reached BentoML: it read
        # both and started as many workers as they say together (prod 2, dev 1; the
        # @bentoml.service default is 2, so dev's 1 is the override's).
        assert f"user config override from path: {env['BENTOML_CONFIG']}" in _log(srv)
        if bentoml_overrides(objects):
            assert "user config override from json" in _log(srv), srv.output()
        workers = service_config(objects)["workers"]
        initialized = f"Service {APP} initialized"
        _wait_for(lambda: _log(srv).count(initialized) >= workers, 60)
        # A worker more than configured would be initialized alongside the others.
        _wait_for(lambda: _log(srv).count(initialized) > workers, 3)
        assert _log(srv).count(initialized) == workers, srv.output()
    finally:
        srv.stop()


def test_rendered_grpc_container_answers_its_probes_and_infers(rendered, bentoml_home, pinned):
    """Run the gRPC container as the prod Deployment declares it (command, args, env from the
    ConfigMaps; the repo root stands in for its workingDir) and call what its probes call,
    grpc.health.v1 on the declared port, then one inference."""
    import numpy as np
    import tritonclient.grpc as tgrpc

    objects = rendered["prod"]
    ctr = container(deployment(objects), "grpc")
    declared_port = container_port(ctr, "grpc")
    argv = [*ctr["command"], *(ctr.get("args") or [])]
    assert argv[argv.index("--port") + 1] == str(declared_port)
    port = declared_port if _port_is_free(declared_port) else free_port()
    argv[argv.index("--port") + 1] = str(port)
    env = {**resolve_env(objects, ctr), "BENTOML_HOME": str(bentoml_home), **pinned}
    # Its metrics port as declared, unless something on this machine holds it (a port is the
    # pod's own in Kubernetes, not the test machine's).
    metrics_port = container_port(ctr, "grpc-metrics")
    if not _port_is_free(metrics_port):
        env["BENTOS_GRPC_METRICS_PORT"] = str(free_port())
    address = f"127.0.0.1:{port}"
    with Process([sys.executable, *argv[1:]], ready=grpc_ready(address), port=port, env=env):
        client = tgrpc.InferenceServerClient(address)
        features = tgrpc.InferInput("features", [1, 4], "FP32")
        features.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
        assert client.infer("rf", [features]).as_numpy("label").tolist() == [0]


@pytest.mark.parametrize("overlay_name", OVERLAYS)
def test_rendered_batch_cronjob_shards_cover_the_input_exactly_once(
    rendered, bentoml_home, pinned, tmp_path, overlay_name
):
    """Run what the CronJob declares, once per completion index as an Indexed Job would:
    its command, with its env (ConfigMap values resolved), local folders for the bucket."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bentos.training.data import load_builtin

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
            "BENTOS_RF_MODEL": pinned["BENTOS_RF_MODEL"],
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


def _champions_in(folder: Path, trained) -> dict[str, str]:
    """A registry in `folder` (bentos.registry) holding the session's two models, each its
    name's champion: model name -> tag."""
    from bentos.registry import Registry

    registry = Registry(str(folder))
    champions = {}
    for tag in (trained.rf_tag, trained.tflite_tag):
        name, version = tag.split(":")
        registry.push(tag)
        registry.set_champion(name, version, "test")
        champions[name] = tag
    return champions


def _pull(objects: list[dict], obj: dict, registry: Path, home: Path, tmp: Path):
    """Run the init container `pull-models` of `obj` as declared: its command from the source
    folder, its env (ConfigMaps resolved), with `registry` for the bucket and the fresh folders
    `home` and `tmp` for its emptyDirs (its BENTOML_HOME and /tmp)."""
    contract = container_contract(objects, obj, PULL_MODELS)
    assert contract.argv == ["python", "-m", "bentos", "models", "pull"]
    assert contract.working_dir == "/home/bentoml/bento/src"
    assert contract.mounts[contract.env["BENTOML_HOME"]] == "bentoml-home"
    assert "/tmp" in contract.mounts
    assert contract.env["BENTOS_REGISTRY"].startswith("s3://")  # the bucket, a folder here
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTOS_", "BENTOML_HOME"))}
    env |= contract.env | {
        "BENTOML_HOME": str(home),
        "BENTOS_REGISTRY": str(registry),
        "TMPDIR": str(tmp),
    }
    return subprocess.run(
        [sys.executable, *contract.argv[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(("kind", "name"), [("Deployment", APP), ("CronJob", "batch-predict")])
def test_rendered_pull_models_init_container_imports_the_champions_into_its_bentoml_home(
    rendered, trained, tmp_path, kind, name
):
    """The pod's emptyDir starts empty: after the pull it holds each champion, sha256 intact,
    as the :latest its processes open (bentos.settings.ModelSettings' defaults). A second run
    into the same folder (the init container run again in the same pod) succeeds too."""
    from bentoml._internal.models.model import ModelStore

    from bentos.models import open_model

    objects = rendered[REGISTRY_OVERLAY]
    obj = one(objects, kind, name)
    champions = _champions_in(tmp_path / "registry", trained)
    home = tmp_path / "home"
    proc = _pull(objects, obj, tmp_path / "registry", home, tmp_path / "tmp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pulled = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("pulled ")]
    assert sorted(pulled) == sorted(champions.values()), proc.stdout
    store = ModelStore(home / "models")
    for model_name, tag in champions.items():
        assert str(store.get(f"{model_name}:latest").tag) == tag
        open_model(store.get(tag))  # every file as hashed at training, or a ModelError
    assert list((tmp_path / "tmp").iterdir()) == []  # the downloaded archives are gone
    again = _pull(objects, obj, tmp_path / "registry", home, tmp_path / "tmp")
    assert again.returncode == 0, again.stdout + again.stderr


def test_rendered_grpc_container_serves_the_champions_its_init_container_pulled(
    rendered, trained, tmp_path
):
    """The server pod as the registry component renders it: `pull-models` fills the pod's
    bentoml-home, then the gRPC container, whose BENTOML_HOME is on that volume, starts with its
    declared command and env (no model tags pinned: the :latest of that store) and serves the
    champions' versions."""
    import numpy as np
    import tritonclient.grpc as tgrpc

    objects = rendered[REGISTRY_OVERLAY]
    dep = deployment(objects)
    champions = _champions_in(tmp_path / "registry", trained)
    home = tmp_path / "home"
    proc = _pull(objects, dep, tmp_path / "registry", home, tmp_path / "tmp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ctr = container(dep, "grpc")
    grpc_home = resolve_env(objects, ctr)["BENTOML_HOME"]
    assert {m["mountPath"]: m["name"] for m in ctr["volumeMounts"]}[grpc_home] == "bentoml-home"
    argv = [*ctr["command"], *(ctr.get("args") or [])]
    declared_port = container_port(ctr, "grpc")
    port = declared_port if _port_is_free(declared_port) else free_port()
    argv[argv.index("--port") + 1] = str(port)
    metrics = container_port(ctr, "grpc-metrics")
    env = {
        **resolve_env(objects, ctr),
        "BENTOML_HOME": str(home),
        "BENTOS_GRPC_METRICS_PORT": str(metrics if _port_is_free(metrics) else free_port()),
    }
    assert not {"BENTOS_RF_MODEL", "BENTOS_TFLITE_MODEL"} & set(env)
    outside = {k: v for k, v in os.environ.items() if not k.startswith("BENTOS_")}
    address = f"127.0.0.1:{port}"
    with Process(
        [sys.executable, *argv[1:]],
        ready=grpc_ready(address),
        port=port,
        env={**outside, **env},
        inherit=False,
    ):
        client = tgrpc.InferenceServerClient(address)
        for served, model_name in (("rf", "rf-classifier"), ("tflite", "tflite-classifier")):
            version = champions[model_name].split(":")[1]
            assert list(client.get_model_metadata(served).versions) == [version], served
        features = tgrpc.InferInput("features", [1, 4], "FP32")
        features.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
        assert client.infer("rf", [features]).as_numpy("label").tolist() == [0]
