"""Fixtures: inputs in tmp dirs, the demo and generated data built once per session, an S3 endpoint, Spark."""

import runpy
import shutil
import uuid
from pathlib import Path

import pytest

from loyalty_pipeline_tests.scenarios import SEED_DATA, Inputs, S3Bucket


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    return Inputs(tmp_path)


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Inputs:
    """The demo data (data/) materialized once per session; read it, never write it (see `demo_copy`)."""
    run = Inputs(SEED_DATA)
    run.warehouse = tmp_path_factory.mktemp("demo") / "warehouse.duckdb"
    run.materialize("2024-06-01", "2024-06-05")
    return run


@pytest.fixture
def demo_copy(demo: Inputs, tmp_path: Path) -> Inputs:
    """A test's own copy of the demo warehouse, to tamper with."""
    run = Inputs(SEED_DATA)
    run.warehouse = Path(shutil.copy(demo.warehouse, tmp_path / "warehouse.duckdb"))
    return run


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Path:
    """`python bench/generate.py` at a tiny scale: 300 customers, 14 days from 2024-01-01, one journey."""
    out = tmp_path_factory.mktemp("generated")
    generate = runpy.run_path(str(Path(__file__).resolve().parent.parent / "bench" / "generate.py"))
    generate["main"](["--customers", "300", "--days", "14", "--out", str(out), "--seed", "7"])
    return out


@pytest.fixture
def s3_bucket(monkeypatch) -> S3Bucket:
    from moto.server import ThreadedMotoServer

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        # moto keeps buckets in process-wide state: a bucket of its own keeps each test's objects apart
        yield S3Bucket(f"http://{host}:{port}", f"loyalty-{uuid.uuid4().hex[:12]}")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def spark_session():
    from dagster_pyspark.resources import spark_session_from_config

    from loyalty_pipeline.spark.spark import spark_config

    return spark_session_from_config(spark_config("local[2]"))


def pytest_collection_modifyitems(items):
    """The end-to-end tests first (Spark's and the daemon's take minutes each): the two workers start them early and
    fill in with the short ones, instead of ending on one long test."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)
