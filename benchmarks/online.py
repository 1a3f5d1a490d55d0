"""The online benchmark: every route of this project against the classic Flask deployment and
the framework's no-op ceiling, in one run, on this machine. Loopback only.

    BENTOML_HOME=/path/with/synthetic/models .venv/bin/python -m benchmarks.online [--repeat 3]

Needs the synthetic workload's models (`bentos train --dataset synthetic`). Starts every server
itself: the service (`bentoml serve .`), the gRPC server (`python -m bentos.serving.grpc`), the
machine's floor (a bare ASGI app under uvicorn, benchmarks/variants/floor.py), the rungs of the
request path's ladder above it (BentoML's own layers, benchmarks/variants/framework.py; a no-op
with service.py's settings and middleware, then parsing, validation and the walk,
benchmarks/variants/noop_service.py), the baseline (benchmarks/baseline:
Flask + joblib + gunicorn, 2 sync workers) and a peer, bare BentoML as its scikit-learn example
writes a service (benchmarks/baseline/bentoml_service.py, 2 workers), both serving the same
forest. Prints one table (medians
over --repeat runs) and writes every run to --json.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
from pathlib import Path

import numpy as np

from benchmarks import loadgen
from benchmarks.servers import Process, bentoml_serve, grpc_serve, gunicorn_serve, uvicorn_serve
from benchmarks.workload import sample_rows

# The request path's ladder, from the floor up, one layer a rung (BENCHMARKS.md, "The floor").
LADDER = ("floor", "framework", "noop", "parse", "validate", "walk", "predict")
TARGETS = (
    "flask",
    "bentoml",
    *LADDER,
    "predict_edge",
    "v2_rest",
    "grpc",
)
# The rungs the no-op's server answers, by its /predict's step (benchmarks/variants/noop_service.py).
_STEPS = {"noop": "", "parse": "?step=parse", "validate": "?step=validate", "walk": "?step=walk"}
BASELINE = "flask"


def _bodies(schema, rows: int, seed: int = 0) -> tuple[bytes, bytes, np.ndarray, bytes]:
    frame = sample_rows(schema, rows, seed)
    instances = json.dumps({"instances": frame.to_dict(orient="records")}).encode()
    x = frame.to_numpy(dtype=np.float32)
    v2 = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "data": x.ravel().tolist(),
                }
            ]
        }
    ).encode()
    # Bare BentoML's example body: the rows as an array, features in the schema's order.
    array = json.dumps({"input_series": frame.to_numpy(dtype=np.float64).tolist()}).encode()
    return instances, v2, x, array


def start_servers(targets: set[str]) -> dict[str, Process]:
    from bentos.models import RF_FILE, get, open_model
    from bentos.settings import ModelSettings, load

    servers: dict[str, Process] = {}
    if targets & {"predict", "predict_edge", "v2_rest"}:
        servers["service"] = bentoml_serve(".").wait_ready()
    if "bentoml" in targets:
        servers["bentoml"] = bentoml_serve(
            "benchmarks.baseline.bentoml_service:Classifier",
            env={"BENTOS_RF_MODEL": load(ModelSettings).rf_model},
        ).wait_ready()
    if "floor" in targets:
        servers["floor"] = uvicorn_serve("benchmarks.variants.floor:app").wait_ready()
    if "framework" in targets:
        servers["framework"] = bentoml_serve("benchmarks.variants.framework:Framework").wait_ready()
    if targets & set(_STEPS):
        servers["noop"] = bentoml_serve("benchmarks.variants.noop_service:Noop").wait_ready()
    if "grpc" in targets:
        servers["grpc"] = grpc_serve().wait_ready()
    if "flask" in targets:
        stored = open_model(load(ModelSettings).rf_model)  # the forest the service serves
        servers["flask"] = gunicorn_serve(
            {
                "BASELINE_MODEL": str(Path(get(stored.tag).path_of(RF_FILE))),
                "BASELINE_FEATURES": ",".join(stored.schema.names),
                "BASELINE_LABELS": ",".join(map(str, stored.schema.labels)),
            }
        ).wait_ready()
    return servers


def cell(target: str, servers, bodies, clients: int, duration: float) -> loadgen.Result:
    instances, v2, x, array = bodies
    rows = x.shape[0]
    if target == "grpc":
        return loadgen.run_grpc(
            servers["grpc"].address, "rf", x, concurrency=clients, duration=duration
        )
    url, body = {
        "flask": (servers.get("flask") and servers["flask"].url + "/predict", instances),
        "bentoml": (servers.get("bentoml") and servers["bentoml"].url + "/classify", array),
        "floor": (servers.get("floor") and servers["floor"].url + "/predict", instances),
        "framework": (
            servers.get("framework") and servers["framework"].url + "/predict",
            instances,
        ),
        **{
            step: (servers.get("noop") and servers["noop"].url + "/predict" + query, instances)
            for step, query in _STEPS.items()
        },
        "predict": (servers.get("service") and servers["service"].url + "/predict", instances),
        "predict_edge": (
            servers.get("service") and servers["service"].url + "/predict_edge",
            instances,
        ),
        "v2_rest": (servers.get("service") and servers["service"].url + "/v2/models/rf/infer", v2),
    }[target]
    if shutil.which("wrk"):
        return loadgen.run_wrk(url, body, concurrency=clients, duration=duration, rows=rows)
    return loadgen.run(url, body, concurrency=clients, duration=duration, rows=rows)


def serving_requirements_size() -> tuple[int, int]:
    """(bytes installed for the serving Bento's locked packages, bytes of what the training
    image adds: TensorFlow, Keras and what they need)."""
    import importlib.metadata as md

    from tests.support import locks

    def size(name: str) -> int:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            return 0
        return sum(
            dist.locate_file(f).stat().st_size
            for f in dist.files or []
            if dist.locate_file(f).exists()
        )

    serving, train = (set(locks.read(path.read_text())) for path in locks.IMAGE_LOCKS.values())
    return sum(map(size, serving)), sum(map(size, train - serving))


def main() -> None:
    args = loadgen.grid_args(TARGETS, [1, 16, 64])
    targets = args.targets

    from bentos.models import open_model
    from bentos.settings import ModelSettings, load

    schema = open_model(load(ModelSettings).rf_model).schema
    bodies = {rows: _bodies(schema, rows) for rows in args.rows}
    results: dict[tuple[str, int, int], list[loadgen.Result]] = {}
    cold_start: dict[str, float] = {}
    for repeat in range(args.repeat):
        for target in targets:
            # Only this target's server runs while it is measured: idle servers are not free on
            # two cores. Targets take turns within each repeat, against drift over the run.
            servers = start_servers({target})
            try:
                for name, srv in servers.items():
                    cold_start.setdefault(name, srv.cold_start_s)
                for rows in args.rows:
                    for clients in args.clients:
                        r = cell(target, servers, bodies[rows], clients, args.duration)
                        results.setdefault((target, rows, clients), []).append(r)
                        loadgen.print_run(repeat, args.repeat, target, rows, clients, r)
            finally:
                for srv in servers.values():
                    srv.stop()

    def med(rs: list[loadgen.Result], key: str) -> float:
        return statistics.median(r.row()[key] for r in rs)

    print(
        f"\n{'target':13} {'rows':>4} {'clients':>7} {'req/s':>9} {'rows/s':>10} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'errors':>6} {'x flask':>8}"
    )
    table = []
    for (target, rows, clients), rs in results.items():
        row = {k: med(rs, k) for k in ("req/s", "rows/s", "p50 ms", "p90 ms", "p99 ms")}
        row["errors"] = sum(r.errors for r in rs)
        base = results.get((BASELINE, rows, clients))
        row["x flask"] = round(row["req/s"] / med(base, "req/s"), 2) if base else None
        table.append({"target": target, "rows": rows, "clients": clients, **row})
        print(
            f"{target:13} {rows:>4} {clients:>7} {row['req/s']:>9.1f} {row['rows/s']:>10.1f} {row['p50 ms']:>8.2f} "
            f"{row['p90 ms']:>8.2f} {row['p99 ms']:>8.2f} {row['errors']:>6} {row['x flask'] or '':>8}"
        )
    print(
        "\ncold start (process start to ready): "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in cold_start.items() if seconds)
    )
    serving, tf = serving_requirements_size()
    print(
        f"installed size of the Bento's serving requirements: {serving / 2**20:.0f} MiB "
        f"(TensorFlow and what only it needs, left out: {tf / 2**20:.0f} MiB)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": platform.platform(),
                    "python": platform.python_version(),
                    "args": vars(args) | {"json": str(args.json)},
                    "table": table,
                    "cold_start_s": cold_start,
                    "serving_bytes": serving,
                    "tensorflow_bytes": tf,
                    "runs": {
                        f"{t}/{r}/{c}": [x.row() for x in rs] for (t, r, c), rs in results.items()
                    },
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
