"""What the tests build their scenarios with: inputs in tmp dirs (`Inputs`), Kafka messages of each topic, the
sensors ticked in process, the app served on a loopback port. The fixtures are in conftest.py."""

import functools
import gzip
import importlib.util
import json
import socket
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import uvicorn

from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline.defs.automation.planning import run_in_process
from loyalty_pipeline.defs.runs import materialize_days
from loyalty_pipeline.domain.config import RulesError, load_rules
from loyalty_pipeline.domain.points import ledger
from loyalty_pipeline.serve.app import create_app
from loyalty_pipeline.serve.serving import serving_path


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


def refused(folder: Path, rules: str) -> str:
    """The error a rules file of `rules` (YAML text) is refused with at load."""
    path = folder / "loyalty.yaml"
    path.write_text(rules)
    with pytest.raises(RulesError) as refusal:
        load_rules(path)
    return str(refusal.value)


def failure_message(event) -> str:
    """A failed step's message and its error (the exception's own message, or a check's)."""
    error = getattr(event.event_specific_data, "error", None)
    while error and error.cause:  # a step's error wraps the exception raised in it
        error = error.cause
    return f"{event.message} {error.message.strip()[:1000]}" if error else event.message  # not a JVM's trace


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
        assert result.success, [failure_message(event) for event in result.all_events if event.is_failure]
        return result

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with duckdb.connect(str(self.warehouse), read_only=True) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            return conn.execute(sql, params or []).fetchall()


SENSORS = ["kafka_new_files", "s3_new_files"]


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def settle(defs: dg.Definitions, instance: dg.DagsterInstance, cursors: dict) -> int:
    """Ticks the sensors, runs what they request in process, until a round requests nothing (`ticks`); every run
    must succeed; returns the runs."""
    outcomes = ticks(defs, instance, cursors)
    assert all(outcomes), f"a run the sensors requested failed: {outcomes}"
    return len(outcomes)


SEED_DATA = Path(__file__).resolve().parent.parent / "data"


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


@functools.cache
def bench_module(name: str):
    """A script of bench/ (a folder of scripts, not a package), loaded by path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def serve(warehouse: Path):
    """The app on a free loopback port, in a thread, for the block: yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(serving_path(str(warehouse))), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


def killed_after_the_id_graph(*args, **kwargs):
    raise RuntimeError("killed")  # the ledger's first day: the id graph step before it has completed


def ticks(defs: dg.Definitions, instance: dg.DagsterInstance, cursors: dict, kill: bool = False) -> list[bool]:
    """Ticks both sensors and runs what they request in process until a round requests nothing; each run's
    success. With `kill`, the first run requested dies in the ledger step, and that is all."""
    outcomes = []
    for _ in range(10):
        requested = False
        for name in SENSORS:
            with dg.build_sensor_context(
                instance=instance, cursor=cursors.get(name), resources=defs.resources, definitions=defs
            ) as context:
                result = defs.resolve_sensor_def(name)(context)
            cursors[name] = result.cursor or cursors.get(name)
            for request in result.run_requests:
                requested = True
                with pytest.MonkeyPatch.context() as patch:
                    if kill:
                        patch.setattr(ledger, "build_day", killed_after_the_id_graph)
                    outcomes.append(run_in_process(defs, request, instance, QUIET).success)
                if kill:
                    return outcomes
        if not requested:
            return outcomes
    raise AssertionError("the sensors kept requesting runs")


def clicks(inputs, *events, file="clicks.jsonl"):
    inputs.kafka(
        "user_activity",
        [(user, {"event_type": kind, "product_id": pid}, ts) for user, kind, pid, ts in events],
        file=file,
    )


def users(inputs: Inputs, *accounts, file="users.jsonl"):
    inputs.kafka("users", [(key, payload, ts) for key, payload, ts in accounts], file=file)


def buy_as(inputs: Inputs, *purchases, file="purchases.jsonl"):
    """(key, payload, ts) purchases: the payload's product_id and any identifiers it carries."""
    inputs.kafka("purchases", list(purchases), file=file)


def differences(left: Path, right: Path) -> dict:
    """Every table of two warehouse files compared row for row (bench/engines.py): {table: rows differing}."""
    return bench_module("engines").differences(left, right)


def request_of(result) -> tuple:
    """(partition key or range, assets selected or None for all) of a tick's single run request."""
    [request] = result.run_requests
    days = request.partition_key or (
        request.tags["dagster/asset_partition_range_start"],
        request.tags["dagster/asset_partition_range_end"],
    )
    return request.job_name, days, request.asset_selection


def tick_on(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None, name: str = "kafka_new_files"):
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=defs.resources, definitions=defs
    ) as context:
        return defs.resolve_sensor_def(name)(context)
