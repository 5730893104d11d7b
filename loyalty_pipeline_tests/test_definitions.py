"""The code location loads the way `dagster dev` loads it, with every asset, check and job."""

import fnmatch
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import dagster as dg
import pytest

from loyalty_pipeline.definitions import EVERYTHING_JOB, build_defs

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
@pytest.mark.parametrize(
    "command",
    [["dagster", "definitions", "validate", "-w", "workspace.yaml"], ["dg", "check", "defs"]],
    ids=["dagster", "dg"],
)
def test_workspace_loads_with_dagster_cli(tmp_path, command):
    env = {**os.environ, "LOYALTY_DATA_DIR": str(ROOT / "data"), "LOYALTY_WAREHOUSE": str(tmp_path / "w.duckdb")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / command[0]), *command[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "error" not in done.stderr.lower(), done.stderr


def test_every_table_of_the_spec_is_an_asset_and_every_asset_has_a_check(tmp_path):
    defs = build_defs({"LOYALTY_DATA_DIR": str(tmp_path)})
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert {
        "raw/users",
        "raw/products",
        "raw/purchases",
        "raw/user_activity",
        "raw/redemptions",
        "raw/returns",
        "raw/customers",
        "raw/historical_purchases",
        "loyalty/all_products",
        "loyalty/enriched_purchases",
        "loyalty/sales_totals",
        "loyalty/caffeine_index",
        "loyalty/promotions",
        "loyalty/tier_history",
        "loyalty/tier_status",
        "points/point_transactions",
        "points/point_balances",
        "customer/profile_360",
        "customer/recommendations",
        "journey/journey_state",
        "journey/activations",
        "journey/goal_report",
        "journey/activation_exports",
    } <= keys
    checked = {key.asset_key.to_user_string() for key in defs.resolve_asset_graph().asset_check_keys}
    assert keys <= checked
    assert defs.resolve_job_def(EVERYTHING_JOB)


def test_bad_rules_fail_at_load_naming_the_key(tmp_path):
    (tmp_path / "loyalty.yaml").write_text("stamp_card: {cycle: many}\n")
    try:
        build_defs({"LOYALTY_DATA_DIR": str(tmp_path)})
    except ValueError as error:
        assert "stamp_card.cycle" in str(error)
    else:
        raise AssertionError("invalid rules loaded")


def test_time_dependent_assets_share_daily_partitions(tmp_path):
    graph = build_defs({"LOYALTY_DATA_DIR": str(tmp_path)}).resolve_asset_graph()
    partitioned = {node.key.to_user_string() for node in graph.asset_nodes if node.partitions_def}
    assert partitioned == {
        "raw/users",
        "raw/products",
        "raw/purchases",
        "raw/user_activity",
        "raw/redemptions",
        "raw/returns",
        "raw/events",
        "raw/historical_purchases",
        "raw/s3_returns",
        "identity/id_graph",
        "loyalty/enriched_purchases",
        "points/point_transactions",
        "journey/journey_state",
        "journey/activations",
        "journey/goal_report",
        "journey/activation_exports",
    }
    for node in graph.asset_nodes:
        if node.partitions_def:
            assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)
            assert node.backfill_policy == dg.BackfillPolicy.single_run()


def test_domain_modules_do_not_load_dagster():
    """Every module outside the wiring (the files pyproject.toml lets import Dagster) imports without loading it,
    whatever it imports in turn."""
    ignores = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]["per-file-ignores"]
    wiring = [pattern for pattern, rules in ignores.items() if "TID251" in rules]
    domain = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in sorted((ROOT / "loyalty_pipeline").rglob("*.py"))
        if path.name != "__init__.py" and not any(fnmatch.fnmatch(str(path.relative_to(ROOT)), p) for p in wiring)
    ]
    assert (
        "loyalty_pipeline.domain.points.ledger" in domain and "loyalty_pipeline.defs.automation.sensors" not in domain
    )
    imports = "".join(f"import {module}\n" for module in domain)
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys\n{imports}print(sorted({{m.split('.')[0] for m in sys.modules}}))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "'dagster'" not in loaded, loaded
