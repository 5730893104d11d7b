"""Freshness: seconds from a purchases file landing to `/api/customers/{id}` showing the purchase and its points,
through a real `dagster dev` (its daemon ticks the Kafka sensor and launches the run) and the real app.

    python bench/freshness.py --work DIR [--out FILE]

DIR is a `bench/late_file_cost.py --work` folder: its warehouse is the history. The Kafka sensor's cursor is set
to the files already there (as if it had been running all along), then started; a file with the purchases of four
weeks before, copied into new orders of the next day, lands, and the app is polled every 0.2 s for one of its
buyers. The split comes from Dagster's own records: the tick that saw the file, the run's start and end.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import duckdb
from late_file_cost import START, copy_purchases, source_day  # beside this script

from loyalty_pipeline.definitions import build_defs

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOCATION = {"repositoryLocationName": "loyalty_pipeline", "repositoryName": "__repository__"}
SENSOR = {**LOCATION, "sensorName": "kafka_new_files"}
RUNS = "{ runsOrError { ... on Runs { results { runId status startTime endTime creationTime } } } }"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    answer = get(f"http://127.0.0.1:{port}/graphql", {"query": query, "variables": variables or {}})
    assert "errors" not in answer, answer
    return answer["data"]


def wait_for(what: str, probe, timeout: float, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if found := probe():
                return found
        except OSError:
            pass
        time.sleep(every)
    raise TimeoutError(what)


def shows(card: dict, day: str) -> bool:
    """The card holds a purchase of `day` among its latest events and points earned on `day`."""
    bought = any(row["at"].startswith(day) and row["what"] == "purchase" for row in card["recent_activity"])
    earned = any(row["occurred_at"].startswith(day) and row["points"] > 0 for row in card["ledger"])
    return bought and earned


def measure(work: Path) -> dict:
    data, warehouse = work / "data", work / "warehouse.duckdb"
    env = {"LOYALTY_DATA_DIR": str(data), "LOYALTY_WAREHOUSE": str(warehouse)}
    defs = build_defs(env)
    with dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources=defs.resources, definitions=defs
    ) as context:
        cursor = defs.resolve_sensor_def("kafka_new_files")(context).cursor  # every file there now, seen
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        built = conn.execute("SELECT max(day) FROM points.ledger_days").fetchall()[0][0]
    day = built + timedelta(days=1)
    staged = work / f"on-time-{day}.jsonl"
    rows = copy_purchases(warehouse, source_day(day), day, staged, (day - START).days * 10**6)
    buyer = json.loads(staged.read_text().splitlines()[0])["key"]

    home = Path(tempfile.mkdtemp(prefix="freshness-home-"))
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    dagster_port, app_port = free_port(), free_port()
    children_env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / "freshness-dagster.log", "w") as dagster_log, open(logs / "freshness-app.log", "w") as app_log:
        dev = subprocess.Popen(
            ["env", "--default-signal=INT,TERM", str(BIN / "dagster"), "dev", "-w", "workspace.yaml"]
            + ["-h", "127.0.0.1", "-p", str(dagster_port)],
            cwd=ROOT, env=children_env, stdout=subprocess.DEVNULL, stderr=dagster_log,
        )  # fmt: skip
        app = subprocess.Popen(
            [str(BIN / "loyalty-pipeline"), "serve", "--port", str(app_port), "--warehouse", str(warehouse)],
            env=children_env, stdout=app_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        lookup = f"http://127.0.0.1:{app_port}/api/customers/{quote(buyer)}"
        try:
            wait_for("dagster dev", lambda: graphql(dagster_port, RUNS), 180)
            assert not shows(wait_for("the app", lambda: get(lookup), 60), day.isoformat())
            graphql(
                dagster_port,
                "mutation($s: SensorSelector!, $c: String) { setSensorCursor(sensorSelector: $s, cursor: $c) "
                "{ __typename } }",
                {"s": SENSOR, "c": cursor},
            )
            graphql(
                dagster_port,
                "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename } }",
                {"s": SENSOR},
            )
            time.sleep(20)  # the first tick, on the files already there, has nothing to run
            landed = time.time()
            staged.rename(data / "kafka" / "purchases" / staged.name)  # a whole file appears at once
            wait_for("the purchase in the app", lambda: shows(get(lookup), day.isoformat()), 600, every=0.2)
            visible = time.time()
            run = wait_for(
                "the run's end",
                lambda: [r for r in graphql(dagster_port, RUNS)["runsOrError"]["results"] if r["endTime"]],
                600,
            )[0]
        finally:
            app.terminate()
            dev.send_signal(2)
            app.wait()
            dev.wait(timeout=120)
    shutil.rmtree(home, ignore_errors=True)
    result = {
        "day": day.isoformat(),
        "purchases_in_file": rows,
        "buyer": buyer,
        "landed_to_visible_s": round(visible - landed, 1),
        "landed_to_run_created_s": round(run["creationTime"] - landed, 1),
        "run_created_to_started_s": round(run["startTime"] - run["creationTime"], 1),
        "run_started_to_ended_s": round(run["endTime"] - run["startTime"], 1),
        "run_status": run["status"],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "goal_s": 30,
    }
    result["ok"] = run["status"] == "SUCCESS"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = measure(args.work)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
