"""Operating it: one writer at a time across runs, and a run killed mid-way harms nothing (the sensors' next
ticks converge on the batch answer)."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline.defs.runs import materialize_days
from loyalty_pipeline_tests import test_arrival_order as arrival
from loyalty_pipeline_tests.scenarios import SEED_DATA, ticks

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "loyalty-pipeline")
pytestmark = pytest.mark.e2e


@pytest.fixture
def project_instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return home


def start(home: Path, warehouse: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [CLI, "materialize", "--data-dir", str(SEED_DATA), "--warehouse", str(warehouse)],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def step_windows(instance: dg.DagsterInstance, run_id: str) -> list[tuple[float, float]]:
    starts, windows = {}, []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            windows.append((starts[event.step_key], entry.timestamp))
    return windows


def test_two_runs_at_once_never_write_at_the_same_time(project_instance, tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    assert start(project_instance, warehouse).wait(timeout=300) == 0  # creates the instance's storage once
    first, second = start(project_instance, warehouse), start(project_instance, warehouse)
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert second.wait(timeout=600) == 0, second.stderr.read()
    with dg.DagsterInstance.from_config(str(project_instance)) as instance:
        runs = instance.get_runs(limit=2)
        a, b = (step_windows(instance, run.run_id) for run in runs)
    assert len(a) == len(b) == 13  # Kafka topics, tier tables, lifetime loyalty tables, journeys, 360: one step each
    overlapping = [(x, y) for x in a for y in b if x[0] < y[1] and y[0] < x[1]]
    assert overlapping == []  # every step holds the warehouse pool's only slot


def test_a_run_killed_mid_way_leaves_the_warehouse_readable_and_the_next_run_completes(project_instance, tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    assert start(project_instance, warehouse).wait(timeout=300) == 0
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        expected = conn.execute("SELECT * FROM loyalty.sales_totals ORDER BY ALL").fetchall()
    victim = start(project_instance, warehouse)
    with dg.DagsterInstance.from_config(str(project_instance)) as instance:
        deadline = time.time() + 120
        while time.time() < deadline:  # kill it once it is inside a step that writes the warehouse
            runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            if runs and len(step_windows(instance, runs[0].run_id)) >= 3:
                break
            time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        assert conn.execute("SELECT * FROM loyalty.sales_totals ORDER BY ALL").fetchall() == expected
    after = subprocess.run(
        [CLI, "materialize", "--data-dir", str(SEED_DATA), "--warehouse", str(warehouse)],
        env={**os.environ, "DAGSTER_HOME": str(project_instance)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert after.returncode == 0, after.stderr
    assert "released run" in after.stdout
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        assert conn.execute("SELECT * FROM loyalty.sales_totals ORDER BY ALL").fetchall() == expected


CHAINS = ["identity.graph_days", "points.ledger_days", "journey.journey_days", "journey.activation_days"]


def test_a_sensor_run_killed_after_the_id_graph_converges_on_the_batch_answer(inputs, tmp_path):
    """The run dies in the ledger step, leaving the id graph a day ahead; the next tick retries it, a late file
    comes later: the tables equal one batch run's."""
    texts = arrival.files(seed=5)
    inputs.rules(arrival.RULES)
    late = sorted(path for path in texts if "late" in path or "again" in path)
    last_day = [path for path in texts if arrival.DAYS[-1].isoformat() in path and path not in late]
    defs, cursors = build_defs(inputs.env()), {}
    (tmp_path / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home")) as instance:
        arrival.land(inputs, texts, sorted(set(texts) - set(late) - set(last_day)))
        assert all(ticks(defs, instance, cursors))
        arrival.land(inputs, texts, last_day)
        assert ticks(defs, instance, cursors, kill=True) == [False]
        built = "SELECT max(day)::VARCHAR FROM {}"
        days = {table: inputs.query(built.format(table))[0][0] for table in CHAINS}
        assert days == {CHAINS[0]: str(arrival.DAYS[-1]), **dict.fromkeys(CHAINS[1:], str(arrival.DAYS[-2]))}
        assert ticks(defs, instance, cursors) == [True]  # the next tick plans the killed run's files again
        assert {table: inputs.query(built.format(table))[0][0] for table in CHAINS} == dict.fromkeys(
            CHAINS, str(arrival.DAYS[-1])
        )
        arrival.land(inputs, texts, late)
        assert ticks(defs, instance, cursors) == [True]
        assert ticks(defs, instance, cursors) == []

    batch = inputs.root / "batch.duckdb"
    first, last = str(arrival.DAYS[0]), str(arrival.DAYS[-1])
    assert materialize_days(build_defs(inputs.env(LOYALTY_WAREHOUSE=str(batch))), first, last).success
    tables = [*arrival.TABLES, "identity.id_graph", "identity.merges", *CHAINS]
    assert [t for t in tables if arrival.table_rows(inputs.warehouse, t) != arrival.table_rows(batch, t)] == []
