"""A rendered pod's containers, run by the container engine the way the kubelet would run them.

No Kubernetes cluster can run here, so this stands in for the kubelet: it reads one pod
template of the rendered manifests and turns each container's spec into `docker run`
arguments. The manifests are the only source of those flags, so a manifest change is tested
by a real run:

- command and args (Kubernetes' command replaces the image's ENTRYPOINT, args its CMD),
  workingDir, env and envFrom (ConfigMaps from the rendered objects, Secrets from `secrets`);
- volumes: ConfigMaps and Secrets as read-only files, emptyDirs as a folder of the pod's own
  (group-owned by fsGroup and group-writable, as the kubelet makes them; `medium: Memory` as
  tmpfs), hostPath as a bind mount; containers of one pod share them;
- runAsUser/runAsGroup/fsGroup/supplementalGroups, runAsNonRoot (checked), readOnlyRootFilesystem
  (`--read-only`), capabilities (`--cap-drop`/`--cap-add`), allowPrivilegeEscalation: false
  (`no-new-privileges`), privileged, the seccomp profile;
- resource limits (`--memory`, `--cpus`) and CPU requests (`--cpu-shares`, as the kubelet sets);
- one network namespace for the pod: the host's loopback (`--network host`), which is also the
  only network the tests use;
- probes (httpGet, grpc, exec) with their periods and thresholds, and termination: the
  preStop hook, then SIGTERM, then SIGKILL once terminationGracePeriodSeconds are up.

What the kubelet does that this does not: image pulls (the image is local), sizeLimit on
emptyDirs (Kubernetes enforces it by eviction), restarts, and the cluster's own environment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.k8s import config_map_data, container_port, pod_template, resolve_env

# Debian's docker.io client (20.10): the newer client that may be on PATH refuses BuildKit builds
# without the buildx plugin (tests/image/engine.sh).
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
LABEL = "org.bentos.image-test=true"  # every container these tests start, for cleanup


def docker(*args: str, check: bool = True, timeout: float = 120, **kw: Any):
    proc = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... failed:\n{proc.stderr}")
    return proc


def quantity_bytes(value: str | int) -> int:
    """A Kubernetes memory quantity ("2Gi", "512Mi", "1G", "1000") in bytes."""
    text = str(value)
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    units.update({"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12})
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * units[suffix])
    return int(float(text))


def quantity_cpus(value: str | int | float) -> float:
    """A Kubernetes CPU quantity ("500m", "2", 1.5) in CPUs."""
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


@dataclass
class Container:
    """One running (or finished) container of a pod."""

    pod: Pod
    name: str  # as in the manifest
    docker_name: str  # as the engine knows it
    spec: dict

    def logs(self) -> str:
        proc = docker("logs", self.docker_name, check=False)
        return proc.stdout + proc.stderr

    def running(self) -> bool:
        proc = docker("inspect", "-f", "{{.State.Running}}", self.docker_name, check=False)
        return proc.stdout.strip() == "true"

    def wait(self, timeout: float = 600) -> int:
        """The exit code, once the container has ended."""
        return int(docker("wait", self.docker_name, timeout=timeout).stdout.strip())

    def memory_bytes(self) -> int:
        """The memory the container's cgroup charges now (what its limit is held against), from
        cgroup v2's file or else v1's."""
        files = "/sys/fs/cgroup/memory.current /sys/fs/cgroup/memory/memory.usage_in_bytes"
        proc = docker("exec", self.docker_name, "sh", "-c", f"cat {files} 2>/dev/null", check=False)
        return int(proc.stdout.split()[0])

    def kill(self, signal: str = "KILL") -> None:
        docker("kill", "--signal", signal, self.docker_name)

    def probe(self, kind: str) -> bool:
        """One try of the container's `kind` probe (startupProbe, readinessProbe, ...)."""
        probe = self.spec[kind]
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            import httpx

            get = probe["httpGet"]
            port = container_port(self.spec, get["port"])
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}{get.get('path', '/')}", timeout=timeout)
            except httpx.TransportError:
                return False
            return 200 <= resp.status_code < 400
        if "grpc" in probe:
            import grpc
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            port = probe["grpc"]["port"]
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                request = health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", ""))
                try:
                    reply = stub.Check(request, timeout=timeout)
                except grpc.RpcError:
                    return False
                return reply.status == health_pb2.HealthCheckResponse.SERVING
        if "exec" in probe:
            proc = docker("exec", self.docker_name, *probe["exec"]["command"], check=False)
            return proc.returncode == 0
        raise AssertionError(f"{self.name}: {kind} of a kind this stand-in cannot run: {probe}")

    def wait_started(self) -> float:
        """Seconds until the startup probe passed, within the budget the manifest gives it
        (initialDelaySeconds + periodSeconds x failureThreshold); polled more often than the
        kubelet would, so that the figure is the container's, not the period's."""
        probe = self.spec.get("startupProbe") or self.spec.get("readinessProbe")
        assert probe, f"{self.name} declares no startup or readiness probe"
        kind = "startupProbe" if "startupProbe" in self.spec else "readinessProbe"
        budget = probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get(
            "failureThreshold", 3
        )
        t0 = time.monotonic()
        while time.monotonic() - t0 < budget:
            if not self.running():
                raise AssertionError(f"{self.name} exited before it started:\n{self.logs()}")
            if self.probe(kind):
                return time.monotonic() - t0
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: {kind} failed for {budget} s:\n{self.logs()[-5000:]}")

    def terminate(self) -> int:
        """As the kubelet ends a pod's container: the preStop hook, then SIGTERM, then SIGKILL
        once terminationGracePeriodSeconds (counted from the hook's start) are up. Returns the
        exit code."""
        grace = float(self.pod.spec.get("terminationGracePeriodSeconds", 30))
        t0 = time.monotonic()
        hook = (self.spec.get("lifecycle") or {}).get("preStop")
        if hook:
            assert "exec" in hook, f"{self.name}: a preStop hook this stand-in cannot run: {hook}"
            proc = docker(
                "exec", self.docker_name, *hook["exec"]["command"], check=False, timeout=grace
            )
            assert proc.returncode == 0, f"{self.name}: preStop failed: {proc.stderr}"
        left = max(0, int(grace - (time.monotonic() - t0)))
        docker("stop", "--time", str(left), self.docker_name, timeout=grace + 30)
        return self.wait()


class Pod:
    """One pod of a rendered Deployment or CronJob: its volumes, and its containers on demand.

    `secrets` stands for Secrets created out of band (name -> data); `env` adds what the
    controller sets for this pod (JOB_COMPLETION_INDEX, for a pod of an Indexed Job).
    """

    def __init__(
        self,
        objects: list[dict],
        workload: dict,
        *,
        name: str,
        root: Path,
        secrets: dict[str, dict[str, str]] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.objects = objects
        self.workload = workload
        self.spec = pod_template(workload)["spec"]
        self.name = name
        self.root = root
        self.secrets = secrets or {}
        self.env = env or {}
        self.containers: list[Container] = []
        self.volumes = {v["name"]: self._volume(v) for v in self.spec.get("volumes") or []}

    def _volume(self, volume: dict) -> tuple[str, str | None]:
        """(the host folder, or "" for tmpfs; tmpfs options)."""
        folder = self.root / "volumes" / volume["name"]
        if "emptyDir" in volume:
            if volume["emptyDir"].get("medium") == "Memory":
                size = volume["emptyDir"].get("sizeLimit")
                return "", f"size={quantity_bytes(size)}" if size else None
            folder.mkdir(parents=True)
            fs_group = (self.spec.get("securityContext") or {}).get("fsGroup")
            if fs_group is not None:
                os.chown(folder, 0, int(fs_group))
            folder.chmod(0o2777 if fs_group is not None else 0o777)
            return str(folder), None
        if "configMap" in volume or "secret" in volume:
            if "configMap" in volume:
                source = volume["configMap"]
                data = config_map_data(self.objects, source["name"])
            else:
                source = volume["secret"]
                data = self.secrets[source["secretName"]]
            items = source.get("items")
            if items:
                data = {i["path"]: data[i["key"]] for i in items}
            folder.mkdir(parents=True)
            for key, value in data.items():
                (folder / key).write_text(value)
                (folder / key).chmod(0o644)
            return str(folder), None
        if "hostPath" in volume:
            return volume["hostPath"]["path"], None
        raise AssertionError(f"volume {volume['name']}: a kind this stand-in cannot mount")

    def run_args(self, container: str) -> tuple[list[str], dict]:
        """The `docker run` arguments for one container of this pod, and its spec."""
        every = [*self.spec.get("initContainers", []), *self.spec["containers"]]
        spec = next(c for c in every if c["name"] == container)
        docker_name = f"{self.name}-{container}"
        args = ["--name", docker_name, "--label", LABEL, "--network", "host"]

        pod_sc = self.spec.get("securityContext") or {}
        sc = {**pod_sc, **(spec.get("securityContext") or {})}
        uid, gid = sc.get("runAsUser"), sc.get("runAsGroup")
        if sc.get("runAsNonRoot"):
            assert uid not in (None, 0), f"{container}: runAsNonRoot needs a runAsUser above 0"
        if uid is not None:
            args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
        for group in [pod_sc.get("fsGroup"), *(pod_sc.get("supplementalGroups") or [])]:
            if group is not None:
                args += ["--group-add", str(group)]
        if sc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        caps = sc.get("capabilities") or {}
        for cap in caps.get("drop") or []:
            args += ["--cap-drop", cap]
        for cap in caps.get("add") or []:
            args += ["--cap-add", cap]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if sc.get("privileged"):
            args.append("--privileged")
        seccomp = (sc.get("seccompProfile") or {}).get("type", "RuntimeDefault")
        if seccomp == "Unconfined":
            args += ["--security-opt", "seccomp=unconfined"]
        else:
            assert seccomp == "RuntimeDefault", f"{container}: seccomp {seccomp} is not emulated"

        resources = spec.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        if "memory" in limits:
            args += ["--memory", str(quantity_bytes(limits["memory"]))]
        if "cpu" in limits:
            args += ["--cpus", f"{quantity_cpus(limits['cpu']):g}"]
        if "cpu" in requests:
            args += ["--cpu-shares", str(max(2, round(quantity_cpus(requests["cpu"]) * 1024)))]

        for mount in spec.get("volumeMounts") or []:
            host, tmpfs = self.volumes[mount["name"]]
            target = mount["mountPath"]
            if mount.get("subPath"):
                host = str(Path(host) / mount["subPath"])
            if not host:
                # emptyDirs are not noexec in Kubernetes; docker's tmpfs default is.
                args += ["--tmpfs", f"{target}:rw,exec{',' + tmpfs if tmpfs else ''}"]
                continue
            volume = next(v for v in self.spec["volumes"] if v["name"] == mount["name"])
            readonly = mount.get("readOnly") or "configMap" in volume or "secret" in volume
            args += [
                "--mount",
                f"type=bind,src={host},dst={target}{',readonly' if readonly else ''}",
            ]

        env = {**resolve_env(self.objects, spec, self.secrets), **self.env}
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        if spec.get("workingDir"):
            args += ["--workdir", spec["workingDir"]]

        command, cmd_args = list(spec.get("command") or []), list(spec.get("args") or [])
        if command:
            args += ["--entrypoint", command[0], spec["image"], *command[1:], *cmd_args]
        else:
            args += [spec["image"], *cmd_args]
        return args, spec

    def start(self, container: str) -> Container:
        args, spec = self.run_args(container)
        for port in spec.get("ports") or []:
            # The pod's network is the host's loopback: a port already taken there would leave
            # this container unable to listen, and its probes answered by whatever holds it.
            with socket.socket() as s:
                taken = s.connect_ex(("127.0.0.1", port["containerPort"])) == 0
            assert not taken, f"{container}: port {port['containerPort']} is already in use"
        docker("run", "--detach", *args)
        started = Container(self, container, f"{self.name}-{container}", spec)
        self.containers.append(started)
        return started

    def run_init(self, timeout: float = 600) -> None:
        """The pod's init containers, each to its end in order, as the kubelet runs them before
        the containers: each must exit 0."""
        for spec in self.spec.get("initContainers", []):
            code, logs = self.run(spec["name"], timeout)
            assert code == 0, f"init container {spec['name']} exited {code}:\n{logs[-5000:]}"

    def run(self, container: str, timeout: float = 900) -> tuple[int, str]:
        """Run a container to its end: (exit code, logs)."""
        started = self.start(container)
        code = started.wait(timeout)
        return code, started.logs()

    def remove(self) -> None:
        for started in self.containers:
            docker("rm", "--force", started.docker_name, check=False)
        self.containers = []

    def volume(self, name: str) -> Path:
        """The host folder behind one of the pod's volumes (emptyDir, ConfigMap, hostPath)."""
        host, _ = self.volumes[name]
        assert host, f"volume {name} is tmpfs: it has no folder on the host"
        return Path(host)


def remove_all() -> None:
    """Every container these tests started, whatever state a failed run left them in."""
    ids = docker("ps", "--all", "--quiet", "--filter", f"label={LABEL}").stdout.split()
    if ids:
        docker("rm", "--force", *ids, check=False)
