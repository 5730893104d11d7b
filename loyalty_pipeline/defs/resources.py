"""The one place that builds resources from the environment (all variables optional, see README)."""

import functools
import os
import re
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from loyalty_pipeline.defs.automation.partitions import DEFAULT_START
from loyalty_pipeline.defs.errors import DayRefused, SourceError, WarehouseError
from loyalty_pipeline.defs.stores import LocalStore, S3Store
from loyalty_pipeline.domain.config import EARLIEST_START, KafkaSource, Rules, RulesError, load_rules
from loyalty_pipeline.domain.ingest import connect, kafka
from loyalty_pipeline.lib.chain import DayOrderError
from loyalty_pipeline.serve.serving import serving_path, warehouse_path
from loyalty_pipeline.spark.lake import to_duckdb_tables
from loyalty_pipeline.spark.spark import SparkWarehouse, spark_config


def connect_when_free(database: str, **options) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, waiting (doubling pauses, ~100 s in all) while another process holds its lock. Any other
    failure (a missing folder, a folder, a file that is not a DuckDB database) is an error at once, naming the path."""
    for pause in (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 50, None):
        try:
            return duckdb.connect(database, **options)
        except duckdb.Error as error:
            if pause is None or "lock" not in str(error).lower():
                raise WarehouseError(f"warehouse {database}: {str(error).splitlines()[0]}") from None
            time.sleep(pause)


class Warehouse(DuckDBResource):
    """The DuckDB warehouse file; every connection works in UTC, whatever the machine's time zone."""

    # DuckDB would otherwise cache up to 80% of the machine's memory; past this it spills to disk instead.
    memory_limit: str = "1GB"
    engine: str = "duckdb"  # LOYALTY_ENGINE: where steps downstream of ingest run their SQL, "duckdb" or "spark"
    spark_master: str = "local[2]"  # LOYALTY_SPARK_MASTER
    lake: str = ""  # LOYALTY_LAKE: the Spark engine's Parquet tables; default <warehouse file>.lake/

    def serving_path(self) -> Path:
        return serving_path(self.database)

    @contextmanager
    def get_connection(self, portable: bool = False):
        """A DuckDB connection; with `portable` (a step whose SQL is the portable subset), the chosen engine's."""
        lake = Path(self.lake or f"{self.database}.lake").absolute()
        with self.duckdb_connection() as conn:
            if not portable or self.engine == "duckdb":
                if portable:
                    to_duckdb_tables(conn, lake)  # after runs on Spark: the tables come back
                yield conn
                return
            spark = SparkWarehouse(self._spark_session(), conn, lake)
            try:
                yield spark
            finally:
                spark.close()

    def _spark_session(self):
        try:
            from dagster_pyspark.resources import spark_session_from_config  # the optional [spark] extra
        except ImportError:
            raise WarehouseError("LOYALTY_ENGINE=spark needs the spark extra: pip install -e '.[spark]'") from None
        try:
            return spark_session_from_config(spark_config(self.spark_master))
        except Exception as error:  # no Java, a master that does not answer
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise WarehouseError(
                f"LOYALTY_SPARK_MASTER={self.spark_master}: Spark did not start (Java 17?): {first}"
            ) from None

    @contextmanager
    def duckdb_connection(self):
        # dagster-duckdb's own context manager leaves the connection open when the body raises, which keeps the
        # file locked for the rest of the process; close it on every path.
        # No replacement scans: a missing table is an error naming it, never a Python variable of the same name.
        config = {**self.connection_config, "memory_limit": self.memory_limit, "python_enable_replacements": False}
        conn = connect_when_free(self.database, config=config)
        try:
            conn.execute("SET TimeZone = 'UTC'")
            yield conn
        except DayOrderError as error:  # a Failure: the UI shows its message and metadata first
            raise DayRefused(error) from None
        finally:
            conn.close()


class EventSources(dg.ConfigurableResource):
    """Raw inputs: Kafka topic snapshots under `<data_dir>/kafka/<topic>/` and CSV files under `s3_url`."""

    data_dir: str
    s3_url: str
    s3_endpoint_url: str | None = None

    def kafka_files(self, topic: str, source: KafkaSource | None = None) -> list[Path]:
        """A topic's snapshot files (kcat: `kafka/<topic>/*.jsonl`), or its Kafka Connect objects under
        `<topics_dir>/<topic>/` of the object store when its `source` says so."""
        if source is not None and source.layout == "connect_s3":
            return connect.object_files(self.connect_folder(source.topics_dir) / topic)
        folder = Path(self.data_dir) / "kafka" / topic
        if not folder.is_dir():
            return []
        return sorted(
            path
            for path in folder.iterdir()
            if kafka.is_snapshot(path.name) and path.is_file()  # no folders
        )

    def connect_folder(self, topics_dir: str) -> Path:
        """Where Kafka Connect objects are read: `<topics_dir>/` of the object store (LOYALTY_S3_URL) as the CSV
        exports are (else of the data dir, beside kafka/); an S3 prefix is mirrored into `<data dir>/.s3_mirror/`
        first (new and rewritten objects only)."""
        store = self.object_store()
        if isinstance(store, LocalStore):  # a sink's folder copied beside kafka/ rather than into s3/ is found too
            beside = Path(self.data_dir) / topics_dir
            return beside if beside.is_dir() and not (store.root / topics_dir).is_dir() else store.root / topics_dir
        return store.mirror(topics_dir, Path(self.data_dir) / ".s3_mirror")

    def ignored_kafka_entries(self, topics: list[str]) -> list[list[str]]:
        """[path, reason] of what lies under <data dir>/kafka/ and is not read: files not named like a snapshot,
        folders that are not a known topic (a typo, another letter case)."""
        root = Path(self.data_dir) / "kafka"
        if not root.is_dir():
            return []
        ignored = []
        for entry in sorted(root.iterdir()):
            if entry.name not in topics:
                ignored.append([str(entry), f"not read: not a known topic folder ({', '.join(topics)})"])
            elif entry.is_dir():
                read = set(self.kafka_files(entry.name))
                ignored += [
                    [
                        str(path),
                        f"not read: a snapshot file is named {kafka.SNAPSHOT_NAMES}"
                        if path.is_file()
                        else "not read: not a regular file (a folder, a broken link, a pipe)",
                    ]
                    for path in sorted(entry.iterdir())
                    if path not in read
                ]
        return ignored

    def object_store(self) -> LocalStore | S3Store:
        url = urlparse(self.s3_url.strip())
        if url.scheme.lower() == "s3":
            return S3Store(f"s3://{url.netloc}{url.path}", self.s3_endpoint_url)
        if url.scheme.lower() == "file":
            return LocalStore(Path(url.path))
        if url.scheme and len(url.scheme) > 1:  # (a Windows drive letter is not a scheme)
            raise SourceError(f"LOYALTY_S3_URL={self.s3_url}: use s3://bucket/prefix, file:///folder or a folder")
        return LocalStore(Path(self.s3_url.strip()))

    @staticmethod
    def workdir() -> tempfile.TemporaryDirectory:
        return tempfile.TemporaryDirectory(prefix="loyalty-s3-")


class RulesResource(dg.ConfigurableResource):
    """The rules file (loyalty.yaml); None means the built-in defaults."""

    path: str | None = None
    start_date: str | None = None  # LOYALTY_START_DATE, which wins over the file's start_date
    future_tolerance: str | None = None  # LOYALTY_FUTURE_TOLERANCE: how far past now an event may be, e.g. "6 hours"

    @property
    def rules(self) -> Rules:
        return _cached_rules(self.path)

    def first_day(self) -> date:
        """The first day partition: LOYALTY_START_DATE, else the rules file's start_date, else 2000-01-01."""
        if self.start_date:
            try:
                day = date.fromisoformat(self.start_date)
            except ValueError:
                raise RulesError(f"LOYALTY_START_DATE={self.start_date!r} is not a date (YYYY-MM-DD)") from None
            if day < EARLIEST_START:  # every day since is a partition Dagster enumerates on each lifetime step
                raise RulesError(f"LOYALTY_START_DATE={self.start_date!r} is before {EARLIEST_START}")
            return day
        return self.rules.start_date or DEFAULT_START

    def last_day(self) -> date | None:
        """The last day partition: the rules file's end_date, else None (today is the last)."""
        return self.rules.end_date

    def until_end_date(self, day: date) -> date:
        """`day`, or end_date if sooner: the last day a sensor or the schedule may plan."""
        return min(day, self.rules.end_date or day)

    def latest_event_time(self) -> datetime:
        return self.latest_event_bound()[0]

    def latest_event_bound(self) -> tuple[datetime, str]:
        """The latest event time accepted (naive UTC, as the warehouse stores it), and what sets it: now plus the
        tolerance, or the end of end_date's day if sooner. Later events are quarantined: a clock error must not
        push "as of" into the future, nor an event past end_date into no partition."""
        latest = datetime.now(UTC).replace(tzinfo=None) + tolerance(self.future_tolerance)
        if last := self.last_day():  # its last millisecond: event times are milliseconds
            end = datetime.combine(last + timedelta(days=1), datetime.min.time()) - timedelta(milliseconds=1)
            if end < latest:
                return end, END_DATE_BOUND
        return latest, TOLERANCE_BOUND


# What sets the latest event time accepted, as quarantine reasons name it.
END_DATE_BOUND = "end_date of the rules file"
TOLERANCE_BOUND = "now + LOYALTY_FUTURE_TOLERANCE"


def tolerance(text: str | None) -> timedelta:
    """'1 day' (the default), '6 hours', '30 minutes'."""
    match = re.fullmatch(r"\s*(\d{1,4})\s*(day|hour|minute)s?\s*", text or "1 day")
    if not match:
        raise RulesError(f"LOYALTY_FUTURE_TOLERANCE={text!r} is not a duration such as '1 day' or '6 hours'")
    return timedelta(**{match.group(2) + "s": int(match.group(1))})


def memory_limit(text: str | None) -> str:
    """'1GB' (the default), '512MB', '2.5GiB': at least 64 MB, so DuckDB can work and spill."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(MB|GB|TB|MiB|GiB|TiB)\s*", text or "1GB", re.IGNORECASE)
    if not match or float(match.group(1)) * (1 if match.group(2).upper().startswith("M") else 1000) < 64:
        raise RulesError(f"LOYALTY_MEMORY_LIMIT={text!r} is not a memory size of at least 64MB such as '1GB'")
    return "".join(match.groups())


def engine(text: str | None) -> str:
    """'duckdb' (the default) or 'spark'."""
    name = (text or "duckdb").strip().lower()
    if name not in ("duckdb", "spark"):
        raise RulesError(f"LOYALTY_ENGINE={text!r} is not an engine: use duckdb or spark")
    return name


_cached_rules = functools.lru_cache(maxsize=8)(load_rules)


def build_resources(env: dict[str, str] | None = None) -> dict[str, dg.ConfigurableResource]:
    """Resources from LOYALTY_* variables, with the defaults the README lists (Configuration)."""
    env = {name: value for name, value in (os.environ if env is None else env).items() if value.strip()}  # "" is unset
    data_dir = env.get("LOYALTY_DATA_DIR", "data")
    default_rules = Path(data_dir) / "loyalty.yaml"
    rules_path = env.get("LOYALTY_CONFIG") or (str(default_rules) if default_rules.exists() else None)
    _cached_rules(rules_path)  # fail at load, naming the bad key, rather than in the middle of a run
    tolerance(env.get("LOYALTY_FUTURE_TOLERANCE"))
    return {
        "warehouse": Warehouse(
            database=warehouse_path(env),
            memory_limit=memory_limit(env.get("LOYALTY_MEMORY_LIMIT")),
            engine=engine(env.get("LOYALTY_ENGINE")),
            spark_master=env.get("LOYALTY_SPARK_MASTER", "local[2]"),
            lake=env.get("LOYALTY_LAKE", ""),
        ),
        "sources": EventSources(
            data_dir=data_dir,
            s3_url=env.get("LOYALTY_S3_URL", str(Path(data_dir) / "s3")),
            s3_endpoint_url=env.get("LOYALTY_S3_ENDPOINT_URL"),
        ),
        "rules": RulesResource(
            path=rules_path,
            start_date=env.get("LOYALTY_START_DATE") or None,
            future_tolerance=env.get("LOYALTY_FUTURE_TOLERANCE") or None,
        ),
    }
