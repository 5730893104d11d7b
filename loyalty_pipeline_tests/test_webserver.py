"""The real Dagster webserver on a free loopback port: the code location loads with every asset, check,
schedule and sensor, as a person opening the UI would see it."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline_tests.scenarios import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e

QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {
    __typename
    ... on PythonError { message }
    ... on RepositoryLocation { repositories {
        jobs { name }
        schedules { name cronSchedule }
        sensors { name }
        assetNodes {
            assetKey { path } groupName kinds jobNames
            assetChecksOrError { ... on AssetChecks { checks { name } } }
        }
    } }
} } } } }
"""


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_webserver_serves_the_code_location(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "LOYALTY_DATA_DIR": str(ROOT / "data"),
        "LOYALTY_WAREHOUSE": str(tmp_path / "w.duckdb"),
    }
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
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
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, (
                    server.stderr.read() if server.poll() else "timeout"
                )
                time.sleep(0.5)
        [entry] = graphql(port, QUERY)["data"]["workspaceOrError"]["locationEntries"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location
    [repository] = location["repositories"]
    defs = build_defs({"LOYALTY_DATA_DIR": str(ROOT / "data")})
    served_assets = {"/".join(node["assetKey"]["path"]) for node in repository["assetNodes"]}
    assert served_assets == {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    served_checks = {
        (("/".join(node["assetKey"]["path"])), check["name"])
        for node in repository["assetNodes"]
        for check in node["assetChecksOrError"].get("checks", [])
    }
    assert served_checks == {
        (key.asset_key.to_user_string(), key.name) for key in defs.resolve_asset_graph().asset_check_keys
    }
    assert {s["name"]: s["cronSchedule"] for s in repository["schedules"]} == {"daily_materialization": "15 0 * * *"}
    assert {s["name"] for s in repository["sensors"]} == {"s3_new_files", "kafka_new_files"}
    assert {"materialize_everything", "ingest_historical_purchases", "ingest_customers"} <= {
        j["name"] for j in repository["jobs"]
    }
    nodes = {"/".join(node["assetKey"]["path"]): node for node in repository["assetNodes"]}

    def jobs_listed(asset: str) -> list[str]:  # as its page lists them: not Dagster's hidden __ASSET_JOB
        return sorted(name for name in nodes[asset]["jobNames"] if not name.startswith("__"))

    # the ledger's page lists the job that builds it, not the ingest jobs of the S3 exports
    assert jobs_listed("points/point_transactions") == ["materialize_everything"]
    assert jobs_listed("raw/customers") == ["ingest_customers", "materialize_everything"]
    # a step running on either engine shows the one configured, not both
    assert nodes["points/point_transactions"]["kinds"] == [env.get("LOYALTY_ENGINE") or "duckdb"]
