"""The tuning choices of the service, each measured against its alternative in one run.

    BENTOML_HOME=/path/with/synthetic/models .venv/bin/python -m benchmarks.tuning [--repeat 3]

For each variant: `bentoml serve .` with that configuration, then wrk (or the Python load
generator) on /predict, one row (`--rows`), at 1 and 16 clients. Prints medians, and the lowest and
highest req/s of the runs (a variant that is sometimes fast and sometimes slow shows there).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks import loadgen
from benchmarks.servers import bentoml_serve
from benchmarks.workload import sample_rows

SERVICE = "tabular-classifier"
VARIANTS: dict[str, tuple[dict | None, dict[str, str]]] = {
    # name: (BentoML config for the service, extra environment)
    "chosen (service.py as shipped)": (None, {}),
    "1 worker": ({"workers": 1}, {}),
    "Python's default GC thresholds": (None, {"BENTOS_GC_GEN0_THRESHOLD": "700"}),
    "access log on": ({"logging": {"access": {"enabled": True}}}, {}),
    "scikit-learn forest": (None, {"BENTOS_RF_BACKEND": "sklearn"}),
    # SpreadConnections off in effect: a connection would need a billion responses to close.
    "keep-alive connections never closed": (None, {"BENTOS_KEEPALIVE_REQUESTS": "1000000000"}),
    # A call per request: requests of one loop turn no longer share a model call.
    "one model call per request": (None, {"BENTOS_MAX_BATCH_SIZE": "1"}),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rows", type=int, default=1, help="rows per request body")
    parser.add_argument("--only", nargs="+", help="variant names to run (default: all)")
    args = parser.parse_args()
    from bentos.models import open_model
    from bentos.settings import Settings

    schema = open_model(Settings.from_env().rf_model).schema
    body = json.dumps(
        {"instances": sample_rows(schema, args.rows).to_dict(orient="records")}
    ).encode()
    run = loadgen.run_wrk if shutil.which("wrk") else loadgen.run
    tmp = Path(tempfile.mkdtemp(prefix="bentos-tuning-"))
    print(
        f"{'variant':36} {'clients':>7} {'req/s':>8} {'min-max req/s':>15} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'errors':>6}"
    )
    for name, (config, env) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        env = dict(env)
        if config is not None:
            path = tmp / f"{len(list(tmp.iterdir()))}.yaml"
            path.write_text(json.dumps({"services": {SERVICE: config}}))  # YAML accepts JSON
            env["BENTOML_CONFIG"] = str(path)
        with bentoml_serve(".", env=env) as srv:
            for clients in args.clients:
                rs = [
                    run(
                        srv.url + "/predict",
                        body,
                        concurrency=clients,
                        duration=args.duration,
                        rows=args.rows,
                    )
                    for _ in range(args.repeat)
                ]
                med = {
                    k: statistics.median(r.rps if k == "rps" else r.pct(k) for r in rs)
                    for k in ("rps", 50, 99)
                }
                errors = sum(r.errors for r in rs)
                spread = f"{min(r.rps for r in rs):.0f}-{max(r.rps for r in rs):.0f}"
                print(
                    f"{name:36} {clients:>7} {med['rps']:>8.1f} {spread:>15} {med[50]:>8.2f} "
                    f"{med[99]:>8.2f} {errors:>6}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
