"""Through a real `dagster dev` (webserver and daemon): the sensors, switched on over GraphQL, drive every run
while files land day by day and late; once the runs settle, none failed, a backfill of every day launched as the
UI launches it is one run, and the warehouse equals a batch run."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline.defs.runs import materialize_days
from loyalty_pipeline_tests.arrival import DAYS, RULES, TABLES, files, land, table_rows
from loyalty_pipeline_tests.scenarios import SENSORS, free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e
LOCATION = {"repositoryLocationName": "loyalty_pipeline", "repositoryName": "__repository__"}
STATE = """
query($r: RepositorySelector!) { sensorsOrError(repositorySelector: $r) { ... on Sensors { results {
      name sensorState { status ticks(limit: 1) { timestamp status } } } } }
  runsOrError { ... on Runs { results { runId status endTime tags { key value } } } } }
"""


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer
    return answer["data"]


def state(port: int) -> tuple[dict, list]:
    data = graphql(port, STATE, {"r": LOCATION})
    sensors = {sensor["name"]: sensor["sensorState"] for sensor in data["sensorsOrError"]["results"]}
    return sensors, data["runsOrError"]["results"]


def wait_until_settled(port: int, since: float, timeout: float = 300) -> list:
    """Until no run is in flight and every sensor has ticked, without requesting, after the last run ended."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        sensors, runs = state(port)
        busy = [run for run in runs if run["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")]
        quiet_since = max([since] + [run["endTime"] or 0 for run in runs])
        ticks = [sensors[name]["ticks"][0] if sensors[name]["ticks"] else None for name in SENSORS]
        if not busy and all(tick and tick["status"] == "SKIPPED" and tick["timestamp"] > quiet_since for tick in ticks):
            return runs
        time.sleep(2)
    raise AssertionError(f"runs did not settle: {state(port)}")


BACKFILL = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
PARTITION_ROWS = """query($k: AssetKeyInput!) { assetOrError(assetKey: $k) { ... on Asset {
    assetMaterializations { partition runId metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }"""
BACKFILL_STATE = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill {
    status runs { status tags { key value } } } } }"""


def backfill_every_day(port: int, timeout: float = 300) -> list[dict]:
    """What the UI's "Launch backfill" on the job's partitions does, over every day; its runs once it is done, each
    with its partition range tags."""
    selector = {"partitionSetName": "materialize_everything_partition_set", "repositorySelector": LOCATION}
    days = [str(day) for day in DAYS]
    launched = graphql(port, BACKFILL, {"p": {"selector": selector, "partitionNames": days}})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    deadline = time.time() + timeout
    while time.time() < deadline:
        backfill = graphql(port, BACKFILL_STATE, {"id": launched["backfillId"]})["partitionBackfillOrError"]
        if backfill["status"] != "REQUESTED" and all(
            run["status"] in ("SUCCESS", "FAILURE") for run in backfill["runs"]
        ):
            ranges = [
                {t["key"]: t["value"] for t in run["tags"] if "partition_range" in t["key"]} for run in backfill["runs"]
            ]
            return [{"status": run["status"], "tags": tags} for run, tags in zip(backfill["runs"], ranges, strict=True)]
        time.sleep(2)
    raise AssertionError(f"the backfill did not finish: {backfill}")


def test_sensors_in_dagster_dev_converge_on_the_batch_answer(inputs, tmp_path):
    texts = files(seed=5)
    inputs.rules(RULES)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), **inputs.env()}
    server = subprocess.Popen(
        [
            "env",
            "--default-signal=INT,TERM",
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "dagster-dev.log").open("w"),
    )  # fmt: skip  (a pipe nobody reads would block the run workers once full)
    try:
        deadline = time.time() + 180
        while True:
            try:
                state(port)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "dagster dev did not start"
                time.sleep(1)
        for name in SENSORS:
            graphql(
                port,
                "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename } }",
                {"s": {**LOCATION, "sensorName": name}},
            )
        late = [path for path in texts if "late" in path or "again" in path]
        late_s3 = [f"s3/historical_purchases/{DAYS[1]}.csv"]
        on_time = sorted(set(texts) - set(late) - set(late_s3))
        for batch in (
            [path for path in on_time if any(str(day) in path for day in DAYS[:3]) or "customers" in path],
            [path for path in on_time if not any(str(day) in path for day in DAYS[:3]) and "customers" not in path],
            late,
            late_s3,
        ):
            landed = time.time()
            land(inputs, texts, batch)
            runs = wait_until_settled(port, landed)
        backfilled = backfill_every_day(port)
        ledger = graphql(port, PARTITION_ROWS, {"k": {"path": ["points", "point_transactions"]}})["assetOrError"]
    finally:
        server.send_signal(2)
        server.wait(timeout=60)
    assert [run["status"] for run in runs] == ["SUCCESS"] * len(runs)
    assert len(runs) >= 4
    reasons = [tag["value"] for run in runs for tag in run["tags"] if tag["key"] == "loyalty/reason"]
    assert any("purchases-late.jsonl" in reason for reason in reasons)
    # the UI's backfill of the job over every day: one run of the whole range, as the CLI's
    assert [(run["status"], run["tags"]) for run in backfilled] == [
        (
            "SUCCESS",
            {"dagster/asset_partition_range_start": str(DAYS[0]), "dagster/asset_partition_range_end": str(DAYS[-1])},
        )
    ]

    # the catalog: each day of the backfill's one run carries its own row count, not the window's
    [backfill_run] = {event["runId"] for event in ledger["assetMaterializations"]} - {run["runId"] for run in runs}
    counted = {
        event["partition"]: entry["intValue"]
        for event in ledger["assetMaterializations"]
        if event["runId"] == backfill_run
        for entry in event["metadataEntries"]
        if entry["label"] == "dagster/partition_row_count"
    }
    with duckdb.connect(str(inputs.warehouse), read_only=True) as conn:
        per_day = dict(conn.sql("SELECT day::VARCHAR, count(*) FROM points.point_transactions GROUP BY 1").fetchall())
    assert counted == {str(day): per_day.get(str(day), 0) for day in DAYS}
    assert len(set(counted.values())) > 1  # days differ, so the window's count on each would fail

    batch_warehouse = tmp_path / "batch.duckdb"
    assert materialize_days(
        build_defs(inputs.env(LOYALTY_WAREHOUSE=str(batch_warehouse))), str(DAYS[0]), str(DAYS[-1])
    ).success
    differing = [table for table in TABLES if table_rows(inputs.warehouse, table) != table_rows(batch_warehouse, table)]
    assert differing == []
