"""Fixtures that build inputs in tmp dirs and run the real Definitions over them."""

import gzip
import importlib.util
import json
import runpy
import shutil
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline.defs.automation.planning import run_in_process
from loyalty_pipeline.defs.runs import materialize_days


def ms(text: str) -> int:
    """Epoch milliseconds of an ISO UTC instant such as '2024-06-01T10:00:00.000'."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def envelope(topic: str, key, payload, ts: str, partition: int = 0, offset: int = 0) -> dict:
    """One message as `kcat -C -J` prints it; payload None is a tombstone."""
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "tstype": "create",
        "ts": ms(ts),
        "broker": 1,
        "key": key,
        "payload": None if payload is None else json.dumps(payload),
    }


class Inputs:
    """A data dir under tmp_path with helpers to write Kafka snapshots, S3 CSVs and rules, and to run days."""

    def __init__(self, root: Path):
        self.root = root
        self.warehouse = root / "warehouse.duckdb"
        self._offsets: dict[tuple[str, int], int] = {}

    def kafka(
        self, topic: str, messages: list[tuple], file: str = "part-0.jsonl", extra_lines: tuple = ()
    ) -> list[dict]:
        """Write (key, payload, ts[, partition]) messages with increasing offsets per partition."""
        written = []
        for key, payload, ts, *partition in messages:
            part = partition[0] if partition else 0
            offset = self._offsets.get((topic, part), 0)
            self._offsets[(topic, part)] = offset + 1
            written.append(envelope(topic, key, payload, ts, part, offset))
        self.write_lines(topic, file, [json.dumps(message) for message in written] + list(extra_lines))
        return written

    def write_lines(self, topic: str, file: str, lines: list[str]) -> Path:
        path = self.root / "kafka" / topic / file
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(line + "\n" for line in lines)
        if file.endswith(".gz"):
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text)
        return path

    def csv(self, key: str, text: str) -> Path:
        path = self.root / "s3" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def rules(self, text: str) -> Path:
        path = self.root / "loyalty.yaml"
        path.write_text(text)
        return path

    def env(self, **extra: str) -> dict[str, str]:
        return {"LOYALTY_DATA_DIR": str(self.root), "LOYALTY_WAREHOUSE": str(self.warehouse), **extra}

    def materialize(self, first: str, last: str | None = None, *, assets: tuple[str, ...] = (), **env: str):
        """Days first..last in one run: every asset, or only `assets` (e.g. "loyalty/sales_totals") and what they
        read, which is what a test of one domain needs."""
        result = materialize_days(build_defs(self.env(**env)), first, last or first, assets=assets)
        assert result.success, [event.message for event in result.all_events if event.is_failure]
        return result

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with duckdb.connect(str(self.warehouse), read_only=True) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            return conn.execute(sql, params or []).fetchall()


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    return Inputs(tmp_path)


SENSORS = ["kafka_new_files", "s3_new_files"]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def settle(defs: dg.Definitions, instance: dg.DagsterInstance, cursors: dict) -> int:
    """Ticks the sensors, runs what they request in process, until a round requests nothing; returns the runs."""
    runs = 0
    for _ in range(10):
        requests = []
        for name in SENSORS:
            with dg.build_sensor_context(
                instance=instance, cursor=cursors.get(name), resources=defs.resources, definitions=defs
            ) as context:
                result = defs.resolve_sensor_def(name)(context)
            cursors[name] = result.cursor or cursors.get(name)  # a skipped tick keeps its cursor
            requests += result.run_requests
            for request in result.run_requests:
                done = run_in_process(defs, request, instance, QUIET)
                assert done.success, [event.message for event in done.all_events if event.is_failure]
                runs += 1
        if not requests:
            return runs
    raise AssertionError("the sensors kept requesting runs")


SEED_DATA = Path(__file__).resolve().parent.parent / "data"


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


class S3Bucket:
    """A bucket on a real S3 endpoint (moto's server over HTTP on 127.0.0.1)."""

    def __init__(self, endpoint_url: str, name: str):
        import boto3

        self.endpoint_url = endpoint_url
        self.name = name
        self.client = boto3.client("s3", endpoint_url=endpoint_url)
        self.client.create_bucket(Bucket=name)

    def put(self, key: str, text: str) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=text.encode())

    def env(self, prefix: str = "exports") -> dict[str, str]:
        return {"LOYALTY_S3_URL": f"s3://{self.name}/{prefix}", "LOYALTY_S3_ENDPOINT_URL": self.endpoint_url}


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


# Kafka messages of the tests' scenarios: prices, purchases, redemptions, returns ((key, payload, ts) tuples).
POINTS = ("points/point_balances",)  # the ledger, the balances and what they read


def priced(inputs, **prices):
    inputs.kafka(
        "products",
        [(pid, {"category": "c", "price": price}, "2022-10-01T00:00:00") for pid, price in prices.items()],
        file="products.jsonl",
    )


def buy(inputs, *purchases, file="purchases.jsonl"):
    return inputs.kafka("purchases", [(user, {"product_id": pid}, ts) for user, pid, ts in purchases], file=file)


def redeem(inputs, *redemptions, file="redemptions.jsonl"):
    inputs.kafka(
        "redemptions",
        [(user, {"redemption_id": rid, "points": points}, ts) for user, rid, points, ts in redemptions],
        file=file,
    )


def give_back(inputs, *returns, file="returns.jsonl"):
    """(customer key, payload, ts) return messages."""
    return inputs.kafka("returns", list(returns), file=file)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


BENCH = Path(__file__).resolve().parent.parent / "bench"


def bench_module(name: str):
    """A script of bench/ (a folder of scripts, not a package), loaded by path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
