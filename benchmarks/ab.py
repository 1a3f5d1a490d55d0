"""Compare served variants side by side: every variant up at once, loaded in alternating rounds.

    BENTOML_HOME=/path/with/synthetic/models .venv/bin/python -m benchmarks.ab \\
        noop=benchmarks.variants.noop_service:Noop/noop predict=./predict \\
        'spread-off=./predict?BENTOS_KEEPALIVE_REQUESTS=1000000000' --rounds 5

Each variant is NAME=TARGET/PATH[?ENV=VALUE&...] (NAME=FOLDER//PATH for a folder elsewhere,
such as another commit's checkout): `bentoml serve TARGET` with that environment,
loaded on PATH. Round after round, each variant in turn gets the same closed loop (wrk, or the
Python load generator), so drift in a noisy machine falls on every variant alike; prints each
run and the medians, with the ratio to the first variant. Bodies come from the served forest's
training data, as in benchmarks.online: one body sent again and again, or with `--bodies N`, N
different bodies in turn (rows that differ, as real traffic sends them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics

from benchmarks import loadgen
from benchmarks.servers import Process, bentoml_serve
from benchmarks.workload import sample_rows


def _variant(spec: str) -> tuple[str, str, str, dict[str, str]]:
    name, _, rest = spec.partition("=")
    rest, _, query = rest.partition("?")
    # A TARGET that is a folder elsewhere (an older checkout) ends with "//": /tmp/old//predict.
    target, _, path = rest.partition("//") if "//" in rest else rest.partition("/")
    if not (name and target and path):
        raise SystemExit(f"bad variant {spec!r}: expected NAME=TARGET/PATH[?ENV=VALUE&...]")
    env = dict(kv.split("=", 1) for kv in query.split("&") if kv)
    return name, target, "/" + path, env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=3)
    parser.add_argument("--bodies", type=int, default=1, help="different bodies sent in turn")
    args = parser.parse_args()
    from bentos.models import open_model
    from bentos.settings import ModelSettings, load

    schema = open_model(load(ModelSettings).rf_model).schema
    rows = sample_rows(schema, args.rows * args.bodies).to_dict(orient="records")
    bodies = [
        json.dumps({"instances": rows[i : i + args.rows]}).encode()
        for i in range(0, len(rows), args.rows)
    ]
    body = bodies if args.bodies > 1 else bodies[0]
    run = loadgen.run_wrk if shutil.which("wrk") else loadgen.run
    servers: dict[str, tuple[Process, str]] = {}
    try:
        for name, target, path, env in map(_variant, args.variants):
            servers[name] = (bentoml_serve(target, env=env).wait_ready(), path)
        rps: dict[str, list[float]] = {name: [] for name in servers}
        for round_ in range(args.rounds):
            for name, (server, path) in servers.items():
                result = run(
                    server.url + path, body, concurrency=args.clients, duration=args.duration
                )
                rps[name].append(result.rps)
                print(
                    f"round {round_ + 1} {name:24} {result.rps:8.0f} req/s "
                    f"p99 {result.pct(99):7.2f} ms errors {result.errors}",
                    flush=True,
                )
    finally:
        for server, _ in servers.values():
            server.stop()
    first = statistics.median(next(iter(rps.values())))
    for name, runs in rps.items():
        median = statistics.median(runs)
        print(
            f"{name:24} median {median:8.0f} req/s  x{median / first:.2f} of the first  "
            f"runs {', '.join(f'{r:.0f}' for r in runs)}"
        )


if __name__ == "__main__":
    main()
