"""The batch jobs as rendered: both CronJobs' run policy, their podFailurePolicy against the
commands' exit codes (the registry component's init container's too), the batch job's Indexed
shape with its shard count set once (a ConfigMap literal that k8s/components/batch-shards copies
into completions and parallelism), the retrain job in the training image, and where their
outputs go.
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from bentos.errors import ExitCode
from tests.support.k8s import (
    K8S,
    OVERLAYS,
    PULL_MODELS,
    TRAINING_IMAGE,
    container,
    includes_component,
    init_containers,
    job_contract,
    kustomization,
    one,
    pod_template,
    render,
)

SHARDS = {"dev": 2, "prod": 4}
SHARD_COMPONENT = K8S / "components" / "batch-shards"
DISRUPTION = {
    "action": "Ignore",
    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
}


def _weekly(schedule: str) -> bool:
    minute, hour, day, month, weekday = schedule.split()
    return (
        minute.isdigit()
        and hour.isdigit()
        and (day, month) == ("*", "*")
        and re.fullmatch(r"[0-7]|MON|TUE|WED|THU|FRI|SAT|SUN", weekday) is not None
    )


@pytest.mark.parametrize("name", ["batch-predict", "retrain"])
def test_cronjob_runs_one_at_a_time_with_bounded_retries_and_history(objects, name):
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
    if name == "batch-predict":
        assert _weekly(spec["schedule"]), spec["schedule"]


def _on_exit(action: str, ctr: str, *codes: ExitCode) -> dict:
    values = sorted(int(c) for c in codes)
    return {
        "action": action,
        "onExitCodes": {"containerName": ctr, "operator": "In", "values": values},
    }


@pytest.mark.parametrize(
    ("name", "rules"),
    [
        # Bad input (2) or a missing model (4) fails every shard alike: the whole Job stops.
        # Too many rejected rows (3) fails that shard again: it stops, the others go on.
        (
            "batch-predict",
            [
                _on_exit("FailJob", "batch-predict", ExitCode.USAGE, ExitCode.MODEL),
                _on_exit("FailIndex", "batch-predict", ExitCode.GATE),
                DISRUPTION,
            ],
        ),
        # Bad data (2), a quality gate (3) or a missing model (4) would fail every retry.
        (
            "retrain",
            [
                _on_exit("FailJob", "retrain", ExitCode.USAGE, ExitCode.GATE, ExitCode.MODEL),
                DISRUPTION,
            ],
        ),
    ],
)
def test_pod_failure_policy_follows_the_exit_code_table(objects, overlay, name, rules):
    cronjob = one(objects, "CronJob", name)
    assert container(cronjob)["name"] == name
    if init_containers(cronjob):
        # The registry component's pull: no registry or champion (2) and an archive failing its
        # sha256 (4) fail every retry and every shard alike.
        assert includes_component(overlay, "registry") and name == "batch-predict"
        assert [c["name"] for c in init_containers(cronjob)] == [PULL_MODELS]
        rules = [*rules, _on_exit("FailJob", PULL_MODELS, ExitCode.USAGE, ExitCode.MODEL)]
    assert cronjob["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"] == rules
    # An I/O error (1) is not in any rule: it is retried, within backoffLimit(PerIndex).
    assert ExitCode.IO == 1 and all(
        1 not in r.get("onExitCodes", {}).get("values", []) for r in rules
    )


def test_batch_predict_is_an_indexed_job_of_shard_count_pods(objects, overlay):
    contract = job_contract(objects, "batch-predict")
    assert contract.argv == ["python", "-m", "jobs.batch_predict"]
    assert contract.completion_mode == "Indexed"
    job = one(objects, "CronJob", "batch-predict")["spec"]["jobTemplate"]["spec"]
    # Integers in the rendered YAML (the replacement copies text from a ConfigMap string).
    assert type(job["completions"]) is int and type(job["parallelism"]) is int
    assert job["completions"] == job["parallelism"] == SHARDS[overlay]
    assert contract.env["BENTOS_SHARD_COUNT"] == str(SHARDS[overlay])
    for key in ("BENTOS_BATCH_INPUT", "BENTOS_BATCH_OUTPUT", "BENTOS_BATCH_MODEL"):
        assert contract.env[key], key
    assert contract.env["BENTOS_BATCH_MODEL"] in ("rf", "edge")
    assert 0 <= float(contract.env["BENTOS_BATCH_MAX_REJECT_FRACTION"]) <= 1
    assert int(contract.env["BENTOS_BATCH_CHUNK_ROWS"]) > 0
    # `jobs` is importable from the Bento's source folder, where the command runs.
    assert contract.working_dir == "/home/bentoml/bento/src"
    last = contract.completions - 1
    assert contract.env_for_index(last)["JOB_COMPLETION_INDEX"] == str(last)
    # Per-index retries may not exceed the Job's total budget.
    assert job.get("backoffLimitPerIndex", 0) <= job["backoffLimit"]


def _mentions(word: str) -> dict[str, int]:
    """File under k8s/ -> how often `word` occurs in its YAML content (comments aside)."""
    counts = {}
    for path in sorted(K8S.rglob("*.yaml")):
        text = "".join(yaml.safe_dump(d) for d in yaml.safe_load_all(path.read_text()) if d)
        if text.count(word):
            counts[str(path.relative_to(K8S))] = text.count(word)
    return counts


def test_the_shard_count_is_written_once_per_kustomization_that_sets_it():
    """The base's literal and prod's; completions and parallelism only as the component's
    targets, and no BENTOS_SHARD_COUNT env entry beside the ConfigMap's."""
    component = "components/batch-shards/kustomization.yaml"
    assert _mentions("BENTOS_SHARD_COUNT") == {
        "base/kustomization.yaml": 1,
        "overlays/prod/kustomization.yaml": 1,
        component: 1,  # the replacement's source
    }
    assert _mentions("completions") == {component: 1}
    assert _mentions("parallelism") == {component: 1}
    for folder in ("base", "overlays/dev", "overlays/prod"):
        listed = yaml.safe_load((K8S / folder / "kustomization.yaml").read_text())["components"]
        assert os.path.relpath(SHARD_COMPONENT, K8S / folder) in listed, folder


def test_an_overlay_changes_the_shard_count_with_one_literal(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / "prod", tmp_path)],
                "configMapGenerator": [
                    {
                        "name": "batch-predict-config",
                        "behavior": "merge",
                        "literals": ["BENTOS_SHARD_COUNT=7"],
                    }
                ],
                "components": [os.path.relpath(SHARD_COMPONENT, tmp_path)],
            }
        )
    )
    objects = render(tmp_path)
    contract = job_contract(objects)
    assert (contract.completions, contract.parallelism) == (7, 7)
    assert contract.env["BENTOS_SHARD_COUNT"] == "7"


def test_retrain_trains_both_models_in_the_training_image(objects, overlay):
    """No --models: both models (RetrainSettings' default), which needs TensorFlow, so the
    retrain CronJob runs the training image (bentofile-train.yaml), set in the overlay."""
    from bentos.settings import RetrainSettings

    contract = job_contract(objects, "retrain")
    assert contract.argv == ["python", "-m", "jobs.retrain"]
    assert "BENTOS_RETRAIN_MODELS" not in contract.env
    assert set(RetrainSettings.model_fields["models"].default.split(",")) == {"rf", "tflite"}
    (entry,) = [i for i in kustomization(overlay)["images"] if i["name"] == TRAINING_IMAGE]
    assert container(one(objects, "CronJob", "retrain"))["image"].startswith(entry["newName"])
    assert contract.completions == 1
    for key in ("BENTOS_RETRAIN_DATA", "BENTOS_RETRAIN_TARGET", "BENTOS_RETRAIN_EXPORT"):
        assert contract.env[key], key
    assert contract.working_dir == "/home/bentoml/bento/src"


def test_overlays_write_batch_output_to_different_folders(rendered):
    """An output folder belongs to one shard count (docs/batch.md): dev's 2 and prod's 4 shards
    must not share one."""
    outputs = {o: job_contract(rendered[o]).env["BENTOS_BATCH_OUTPUT"] for o in OVERLAYS}
    assert len(set(outputs.values())) == len(OVERLAYS), outputs
