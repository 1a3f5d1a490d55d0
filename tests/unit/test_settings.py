"""bentos.settings: one typed class per process, every value checked once with a message naming
the variable, the README's table true to the classes, and nothing else reading the environment."""

from __future__ import annotations

import ast
import re

import pytest

from benchmarks.servers import ROOT
from bentos.errors import ExitCode, SettingsError
from bentos.settings import (
    PROCESSES,
    BatchSettings,
    GrpcSettings,
    RetrainSettings,
    ServingSettings,
    every_variable,
    load,
)


@pytest.fixture
def clean_env(monkeypatch):
    """No setting from the developer's shell leaks in."""
    for name in every_variable():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_hold_without_any_variable(clean_env):
    serving = load(ServingSettings)
    assert (serving.max_rows, serving.rf_backend, serving.rf_model) == (
        1000,
        "packed",
        "rf-classifier:latest",
    )
    batch = load(BatchSettings)
    assert (batch.shard_index, batch.shard_count, batch.rf_backend) == (0, 1, "packed")
    assert batch.threads is None  # the CPUs the job may use (bentos.batch.shard.usable_cpus)
    assert load(GrpcSettings).port == 3001
    assert load(RetrainSettings).models == "rf,tflite"


def test_each_process_reads_its_own_prefix(clean_env):
    clean_env.setenv("BENTOS_RF_BACKEND", "sklearn")
    clean_env.setenv("BENTOS_BATCH_THREADS", "3")
    clean_env.setenv("JOB_COMPLETION_INDEX", "3")
    clean_env.setenv("BENTOS_SHARD_COUNT", "4")
    clean_env.setenv("BENTOS_GRPC_PORT", "3101")
    assert load(ServingSettings).rf_backend == "sklearn"
    batch = load(BatchSettings)
    assert (batch.rf_backend, batch.shard_index, batch.shard_count) == ("packed", 3, 4)
    assert batch.threads == 3
    grpc = load(GrpcSettings)
    assert grpc.port == 3101 and grpc.serving.rf_backend == "sklearn"


@pytest.mark.parametrize(
    ("cls", "variable", "value", "says"),
    [
        (ServingSettings, "BENTOS_MAX_ROWS", "0", "greater than 0"),
        (ServingSettings, "BENTOS_MAX_ROWS", "many", "valid integer"),
        (ServingSettings, "BENTOS_RF_BACKEND", "onnx", "'packed' or 'sklearn'"),
        (GrpcSettings, "BENTOS_GRPC_PORT", "70000", "less than 65536"),
        (GrpcSettings, "BENTOS_MAX_BODY_BYTES", "-1", "greater than 0"),
        (BatchSettings, "BENTOS_BATCH_MAX_REJECT_FRACTION", "1.5", "less than or equal to 1"),
        (BatchSettings, "JOB_COMPLETION_INDEX", "-1", "greater than or equal to 0"),
        (BatchSettings, "BENTOS_BATCH_MODEL", "gpu", "'rf' or 'edge'"),
        (BatchSettings, "BENTOS_BATCH_THREADS", "0", "greater than 0"),
        (RetrainSettings, "BENTOS_RETRAIN_MIN_ACCURACY", "2", "less than or equal to 1"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable_the_rule_and_the_value(
    clean_env, cls, variable, value, says
):
    clean_env.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load(cls)
    message = str(raised.value)
    assert message.startswith(f"{variable}: ") and says in message and repr(value) in message
    assert raised.value.exit_code == ExitCode.USAGE


def _readme_table() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"\| `([A-Z][A-Z0-9_]+)` \| ([^|]+) \|", line)
        if m:
            rows[m.group(1)] = m.group(2).strip().strip("`")
    return rows


def test_the_readme_documents_every_variable_with_its_default():
    documented = _readme_table()
    variables = every_variable()
    assert set(documented) == set(variables), (
        f"missing from the README: {sorted(set(variables) - set(documented))}; "
        f"not a setting: {sorted(set(documented) - set(variables))}"
    )
    for name, default in variables.items():
        shown = documented[name]
        assert shown == ("(none)" if default is None else str(default)), (name, shown, default)


def test_every_process_has_one_settings_class_and_all_share_the_log_settings():
    assert [cls.__name__ for cls in PROCESSES] == [
        "ServingSettings",
        "GrpcSettings",
        "BatchSettings",
        "RetrainSettings",
        "LogSettings",
        "PredictionLogSettings",
        "MonitorSettings",
    ]


# The environment is read in these two places only: the settings, and the model store (where
# BENTO_PATH says whether the models are the Bento's own).
_MAY_READ = {"bentos/settings.py", "bentos/models.py"}


def _environment_reads(path) -> list[int]:
    text = path.read_text()
    lines = text.splitlines()
    return [
        node.lineno
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.Attribute)
        and node.attr in ("environ", "getenv")
        # A write for a library's own configuration (TensorFlow's log level, prometheus_client's
        # multiprocess folder) is not a read.
        and ".setdefault(" not in lines[node.lineno - 1]
        and not re.match(r"\s*os\.environ\[[^]]+\] = ", lines[node.lineno - 1])
    ]


def test_nothing_outside_the_settings_and_the_model_store_reads_the_environment():
    sources = [*ROOT.glob("bentos/**/*.py"), *ROOT.glob("jobs/*.py"), ROOT / "service.py"]
    found = {
        str(p.relative_to(ROOT)): _environment_reads(p)
        for p in sources
        if str(p.relative_to(ROOT)) not in _MAY_READ
    }
    assert {k: v for k, v in found.items() if v} == {}
