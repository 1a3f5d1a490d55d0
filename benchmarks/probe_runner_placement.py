"""Where should a model runner live: in the entry service's workers, or behind bentoml.depends?

    BENTOML_HOME=/path/with/synthetic/models .venv/bin/python -m benchmarks.probe_runner_placement

Serves the RandomForest both ways from the same store and loads each with single-row
requests at 1 and 16 clients. Prints requests/s, p50/p99 and errors per cell.
"""

from __future__ import annotations

import argparse
import json

from benchmarks import loadgen
from benchmarks.servers import bentoml_serve
from benchmarks.workload import sample_rows
from bentos.models import open_model


def _body(rows: int) -> bytes:
    schema = open_model("rf-classifier:latest").schema
    return json.dumps({"instances": sample_rows(schema, rows).to_dict(orient="records")}).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10)
    args = parser.parse_args()
    body = _body(1)
    variants = {
        "in-process (service.py)": ".",
        "bentoml.depends hop": "benchmarks.variants.depends_service:Entry",
    }
    print(f"{'variant':28} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for name, target in variants.items():
        with bentoml_serve(target) as srv:
            for clients in (1, 16):
                r = loadgen.run(
                    srv.url + "/predict", body, concurrency=clients, duration=args.duration
                )
                print(
                    f"{name:28} {clients:>7} {r.rps:>8.1f} {r.pct(50):>8.2f} {r.pct(99):>8.2f} {r.errors:>6}"
                )


if __name__ == "__main__":
    main()
