"""The code location loads, validates with both CLIs, and has the expected shape."""

from __future__ import annotations

import subprocess

import dagster as dg

from segmentation_pipeline.definitions import defs
from tests.conftest import PIPELINE_ASSETS, REPO_ROOT, subprocess_env

BIN = REPO_ROOT / ".venv" / "bin"


def test_dg_check_defs_passes(tmp_path):
    done = subprocess.run(
        [str(BIN / "dg"), "check", "defs"],
        cwd=REPO_ROOT,
        env=subprocess_env(DAGSTER_HOME=tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_workspace_yaml_validates(tmp_path):
    done = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=subprocess_env(DAGSTER_HOME=tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "segmentation_pipeline" in done.stdout + done.stderr


def test_the_code_location_name_the_run_queue_keys_on_is_the_configured_one():
    """dagster.yaml's run queue and the failure alert name the location: a rename in
    workspace.yaml or pyproject alone would take every UI run out of the queue."""
    import tomllib

    import yaml

    from segmentation_pipeline.defs.jobs import CODE_LOCATION

    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    [module] = [entry["python_module"] for entry in workspace["load_from"]]
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    instance = yaml.safe_load((REPO_ROOT / "dagster_home" / "dagster.yaml").read_text())
    limits = instance["concurrency"]["runs"]["tag_concurrency_limits"]

    assert module["location_name"] == project["code_location_name"] == CODE_LOCATION
    assert {"key": "dagster/code_location", "value": CODE_LOCATION, "limit": 1} in limits


def test_job_covers_the_group_with_blocking_checks_in_process():
    definitions = defs()
    job = definitions.resolve_job_def("segmentation_job")
    assert job.executor_def is dg.in_process_executor
    keys = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert set(PIPELINE_ASSETS) <= keys
    checks = {
        spec.key.name: spec
        for checks_def in definitions.asset_checks
        for spec in checks_def.check_specs
    }
    assert {
        "customer_ids_unique",
        "required_fields_present",
        "values_in_range",
        "reject_share_within_limit",
        "customer_count_kept",
    } <= set(checks)
    assert all(
        spec.blocking for spec in checks.values() if spec.asset_key.path == ["raw_customers"]
    )
    for spec in definitions.resolve_all_asset_specs():
        assert spec.group_name == "segmentation"
        assert spec.description
