"""The Spark engine (LOYALTY_ENGINE=spark): the same tables as DuckDB, row for row and type for type, and the
adapter's writes (days swapped in at the commit, nothing on a rollback). Spark starts in seconds: one session per
test process, few tests."""

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import duckdb
import pytest
import sqlglot

from loyalty_pipeline.lib.chain import mark_built
from loyalty_pipeline.spark.spark import LAKE_TABLES, SparkWarehouse
from loyalty_pipeline_tests.scenarios import Inputs, buy, differences, ms, priced, redeem


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT [10, 20, 30][0] AS a",  # NULL on both
        "SELECT l[n + 1] AS a FROM (SELECT [10, 20, 30] AS l, 1 AS n)",
        "SELECT list_slice(l, 1, n - 1) AS a FROM (SELECT [10, 20, 30] AS l, 1 AS n)",  # empty
        "SELECT list_slice(l, 2, n) AS a FROM (SELECT [10, 20, 30] AS l, 3 AS n)",
        "SELECT list_transform(l, lambda x, i: x * 10 + i) AS a FROM (SELECT [1, 2, 3] AS l)",
        "SELECT list_transform(l, lambda x, i: l[i] + coalesce(list_sum(list_slice(l, 1, i - 1)), 0)) AS a "
        "FROM (SELECT [1::BIGINT, 2, 3] AS l)",
        "SELECT list_sum(l) AS a FROM (SELECT []::BIGINT[] AS l)",  # NULL on both
        "SELECT list_sum(l) AS a FROM (SELECT [NULL, 2::BIGINT] AS l)",
        "SELECT md5(k || CAST(DATE '2024-06-01' AS VARCHAR)) AS a FROM (SELECT 'u1' AS k)",
        # the average price: DuckDB's DOUBLE quotient rounded to cents as DuckDB rounds it (9.825 is 9.82)
        "SELECT (CAST(round(CAST(t AS DOUBLE) / n * 100) AS BIGINT) * 0.01)::DECIMAL(18,2) AS a "
        "FROM (SELECT 19.65::DECIMAL(18,2) AS t, 2 AS n)",
        "SELECT list_concat(l, ['x']) AS a FROM (SELECT NULL::VARCHAR[] AS l)",  # a NULL list is empty
        "SELECT list_concat(l, l) AS a FROM (SELECT NULL::VARCHAR[] AS l)",
        "SELECT list_has_any(l, ['x', 'z']) AS a FROM (SELECT ['x', 'y'] AS l)",
        "SELECT list_has_all(l, ['x', 'z']) AS a FROM (SELECT ['x', 'y'] AS l)",
        "SELECT list_has_all(l, ['x']) AS a FROM (SELECT ['x', 'y'] AS l)",
        "SELECT list_has_all(l, ['x']) AS a FROM (SELECT NULL::VARCHAR[] AS l)",
    ],
)
def test_list_functions_mean_the_same_on_spark(sql: str, spark_session):
    from loyalty_pipeline.spark.portable import to_spark

    expected = duckdb.sql(sql).fetchall()[0][0]
    got = spark_session.sql(to_spark(sqlglot.parse_one(sql, read="duckdb"))).collect()[0][0]
    assert (list(got) if isinstance(got, list) else got) == expected


@pytest.mark.e2e  # whole pipeline runs on both engines
def test_generated_data_gives_the_same_tables_on_spark(generated: Path, spark_session, tmp_path: Path):
    on_duckdb, on_spark = Inputs(generated), Inputs(generated)
    on_duckdb.warehouse, on_spark.warehouse = tmp_path / "duckdb.duckdb", tmp_path / "spark.duckdb"
    # two days (a day is ~1 min on Spark: each statement a Spark job of a fraction of a second on 2 cores)
    on_duckdb.materialize("2024-01-01", "2024-01-02")
    on_spark.materialize("2024-01-01", "2024-01-02", LOYALTY_ENGINE="spark")
    assert differences(on_duckdb.warehouse, on_spark.warehouse) == {}
    for table in ("loyalty.sales_totals", "points.point_transactions", "journey.journey_state", "customer.profile_360"):
        assert on_spark.query(f"SELECT count(*) > 0 FROM {table}") == [(True,)], table  # not equal by being empty
    # the generated rules' second journey decides, tests with a control, holds out and re-enters: all of it ran
    kinds = "SELECT DISTINCT regexp_extract(node, '(branch|variant:control|variant|holdout|no_branch)') FROM journey.journey_state"
    assert {"branch", "variant", "variant:control", "holdout"} <= {kind for (kind,) in on_spark.query(kinds)}
    assert on_spark.query("SELECT max(entry) > 1, count(*) > 0 FROM journey.journey_state") == [(True, True)]
    # the tables downstream of ingest are views over the lake, not copies
    lake = Path(f"{on_spark.warehouse}.lake")
    for table in LAKE_TABLES:  # every table downstream of ingest
        assert on_spark.query(f"SELECT count(*) FROM duckdb_views() WHERE schema_name || '.' || view_name = '{table}'")
        rows = on_spark.query(f"SELECT count(*) FROM {table}")[0][0]
        assert bool(list((lake / table.replace(".", "/")).glob("**/*.parquet"))) == bool(rows), table


def returns_scenario(root: Path) -> Inputs:
    """Three days: accepted, repeated, others', unknown, early and by-order returns, and a refused redemption; all
    but the first two outcomes on day 3, so that a run with days 1 and 3 on Spark judges every one there."""
    inputs = Inputs(root)
    priced(inputs, coffee=5, cake=100)
    buy(
        inputs,
        ("u", "coffee", "2022-10-01T08:00:00"),
        ("u", "cake", "2022-10-01T09:00:00"),
        ("v", "coffee", "2022-10-01T10:00:00"),
        ("v", "cake", "2022-10-02T08:00:00"),
    )
    redeem(inputs, ("u", "r1", 500, "2022-10-03T08:00:00"))  # more than u has: refused, its raw JSON kept
    inputs.kafka(
        "returns",
        [
            ("u", {"purchase_id": "purchases:0:1"}, "2022-10-01T09:00:00"),  # at the purchase's instant
            ("v", {"purchase_id": "purchases:0:2", "returned_at": ms("2022-10-01T09:30:00")}, "2022-10-01T11:00:00"),
            ("u", {"purchase_id": "purchases:0:1"}, "2022-10-03T09:00:00"),  # already returned
            ("u", {"purchase_id": "purchases:0:2"}, "2022-10-03T10:00:00"),  # v's purchase
            ("u", {"purchase_id": "purchases:9:9"}, "2022-10-03T11:00:00"),  # unknown
            ("u", {"order_id": "purchases:0:0", "product_id": "coffee"}, "2022-10-03T12:00:00"),  # by order
        ],
    )
    return inputs


@pytest.mark.e2e  # whole pipeline runs on both engines
def test_returns_judged_alike_on_spark_and_switching_engines_keeps_every_row(tmp_path: Path, spark_session):
    """Day 1 on Spark (the lake made), day 2 on DuckDB (the tables come back), day 3 on Spark again (DuckDB's tables
    move to the lake): the same tables, `raw` JSON of the quarantine included, as three days on DuckDB."""
    returns_scenario(tmp_path)
    engines = {"duckdb": ("duckdb", "duckdb", "duckdb"), "switched": ("spark", "duckdb", "spark")}
    runs = {name: Inputs(tmp_path) for name in engines}
    for name, run in runs.items():
        run.warehouse = tmp_path / f"{name}.duckdb"
        for day, engine in zip(("2022-10-01", "2022-10-02", "2022-10-03"), engines[name], strict=True):
            run.materialize(day, LOYALTY_ENGINE=engine)
            if name == "switched" and day == "2022-10-02":
                assert run.query("SELECT count(*) FROM duckdb_views() WHERE schema_name = 'loyalty'") == [(0,)]
    switched = runs["switched"]
    assert differences(runs["duckdb"].warehouse, switched.warehouse) == {}
    assert switched.query(
        "SELECT reason FROM raw.rejected_records WHERE source IN ('loyalty:returns', 'points:redemptions') ORDER BY ALL"
    ) == [
        ("already returned: purchases:0:1",),
        ("insufficient_points",),
        ("purchase purchases:0:2 is another customer's",),
        ("return older than purchase purchases:0:2",),
        ("unknown purchase purchases:9:9",),
    ]
    assert switched.query("SELECT purchase_id FROM loyalty.returns ORDER BY ALL") == [
        ("purchases:0:0",),
        ("purchases:0:1",),
    ]


PROGRAM = """tiers: {levels: [{name: GOLD, above: 20, earn_multiplier: 2}, {name: SILVER, above: 5}], period: calendar,
        every: month, downgrade: one_down}
campaigns: [{id: monday, award: {multiplier: 2}, when: {days: [mon]}, cap: {points: 15, per: week}},
            {id: flat, award: {bonus_points: 3}, stacking: highest}]
event_rules: [{type: sign_up, points: 7, once: ever}, {type: referral, points: 20, within_days: 5}]
"""


@pytest.mark.e2e  # two days on each engine
def test_tier_periods_campaigns_and_event_points_alike_on_spark(tmp_path: Path, spark_session):
    """GOLD reached and lost to a return at October's end (one tier down on 1 November), capped and stacked
    campaign awards, a sign-up and a referral paid on the referee's first purchase: the same tables on both."""
    inputs = Inputs(tmp_path)
    inputs.rules(PROGRAM)
    inputs.kafka(
        "products",
        [(p, {"category": "c", "price": price}, "2022-10-31T00:00:00") for p, price in (("ten", 10), ("big", 25))],
    )
    buy(
        inputs,
        ("u", "big", "2022-10-31T09:00:00"),
        ("u", "ten", "2022-10-31T10:00:00"),
        ("v", "ten", "2022-11-01T09:00:00"),
    )
    inputs.kafka("returns", [("u", {"purchase_id": "purchases:0:0"}, "2022-10-31T12:00:00")])
    inputs.kafka(
        "events",
        [
            ("u", {"type": "sign_up"}, "2022-10-31T08:00:00"),
            ("u", {"type": "referral", "referee": "v"}, "2022-10-31T08:30:00"),
        ],
    )
    runs = {engine: Inputs(tmp_path) for engine in ("duckdb", "spark")}
    for engine, run in runs.items():
        run.warehouse = tmp_path / f"{engine}.duckdb"
        run.materialize("2022-10-31", "2022-11-01", LOYALTY_ENGINE=engine)
    assert differences(runs["duckdb"].warehouse, runs["spark"].warehouse) == {}
    spark = runs["spark"]
    assert spark.query("SELECT user_id, tier, reason FROM loyalty.tier_history ORDER BY valid_from") == [
        ("u", "GOLD", "upgrade"),
        ("u", "SILVER", "period_end"),
        ("v", "SILVER", "upgrade"),
    ]
    assert spark.query("SELECT txn_id, points FROM points.point_transactions WHERE kind = 'earn' ORDER BY ALL") == [
        ("bonus:flat:purchases:0:0", 3),
        ("bonus:flat:purchases:0:1", 3),
        ("bonus:flat:purchases:0:2", 3),
        ("bonus:monday:purchases:0:0", 15),  # 25 cut to the cap; purchases:0:1 then gets nothing
        ("earn:purchases:0:0", 25),
        ("earn:purchases:0:1", 20),  # GOLD's 2x
        ("earn:purchases:0:2", 10),
        ("event:referral:0:1", 20),
        ("event:referral:0:1:referee", 20),
        ("event:sign_up:0:0", 7),
    ]


DAYS_DDL = (
    "CREATE SCHEMA IF NOT EXISTS loyalty; CREATE TABLE IF NOT EXISTS loyalty.t (v VARCHAR NOT NULL, n INT, day DATE)"
)


@pytest.fixture
def lake_table(spark_session, tmp_path: Path, monkeypatch):
    """A day-partitioned lake table `loyalty.t` on a fresh warehouse, through the adapter."""
    monkeypatch.setitem(LAKE_TABLES, "loyalty.t", "day")
    folder = tmp_path / "o'brien"  # a quote in the path
    folder.mkdir()
    duck = duckdb.connect(str(folder / "w.duckdb"))
    duck.execute("CREATE SCHEMA raw; CREATE TABLE raw.r (v VARCHAR NOT NULL)")
    conn = SparkWarehouse(spark_session, duck, folder / "lake")
    conn.execute(DAYS_DDL)
    yield conn, duck
    conn.close()
    duck.close()


def test_a_window_rewrite_swaps_its_days_and_leaves_the_others(lake_table):
    conn, duck = lake_table
    conn.execute("INSERT INTO loyalty.t VALUES ('a', 1, DATE '2024-06-01'), ('b', 2, DATE '2024-06-02')")
    before = {p.name for p in (conn.lake / "loyalty" / "t").iterdir()}
    conn.execute("BEGIN TRANSACTION")
    conn.execute(
        "DELETE FROM loyalty.t WHERE day >= $first AND day < $end", {"first": date(2024, 6, 2), "end": date(2024, 6, 4)}
    )
    conn.execute("INSERT INTO loyalty.t BY NAME SELECT 3 AS n, 'c' AS v, DATE '2024-06-03' AS day")
    assert duck.execute("SELECT v FROM loyalty.t ORDER BY v").fetchall() == [("a",), ("b",)]  # not yet committed
    conn.execute("COMMIT")
    assert duck.execute("SELECT v, n, day FROM loyalty.t ORDER BY v").fetchall() == [
        ("a", 1, date(2024, 6, 1)),
        ("c", 3, date(2024, 6, 3)),
    ]
    after = {p.name for p in (conn.lake / "loyalty" / "t").iterdir()}
    assert "day=2024-06-01" in before & after and "day=2024-06-02" not in after  # day 1 was not rewritten
    assert conn.execute("SELECT count(*) FROM loyalty.t WHERE n > $1", [1]).fetchall() == [(1,)]


def test_a_rollback_or_a_failed_statement_changes_nothing(lake_table):
    conn, duck = lake_table
    conn.execute("INSERT INTO loyalty.t VALUES ('a', 1, DATE '2024-06-01')")
    conn.execute("BEGIN TRANSACTION")
    conn.execute("UPDATE loyalty.t SET n = n + 10 WHERE v = 'a'")
    assert conn.execute("SELECT n FROM loyalty.t").fetchall() == [(11,)]  # the transaction sees its own write
    conn.execute("ROLLBACK")
    assert duck.execute("SELECT n FROM loyalty.t").fetchall() == [(1,)]
    with pytest.raises(Exception, match="no_such_column"):
        conn.execute("INSERT INTO loyalty.t SELECT no_such_column, 2, DATE '2024-06-02'")
    assert duck.execute("SELECT v, n FROM loyalty.t").fetchall() == [("a", 1)]


def test_an_empty_lake_table_reads_as_its_declared_columns(lake_table):
    conn, duck = lake_table
    assert duck.execute("SELECT * FROM loyalty.t").fetchall() == []
    assert [c[0] for c in duck.execute("SELECT * FROM loyalty.t").description] == ["v", "n", "day"]
    assert conn.execute("SELECT count(*) FROM loyalty.t").fetchall() == [(0,)]


def test_a_commit_whose_duckdb_write_fails_leaves_the_lake_as_it_was(lake_table):
    conn, duck = lake_table
    conn.execute("INSERT INTO loyalty.t VALUES ('a', 1, DATE '2024-06-01')")
    conn.execute("BEGIN TRANSACTION")
    conn.execute("DELETE FROM loyalty.t")
    conn.execute("INSERT INTO loyalty.t VALUES ('b', 2, DATE '2024-06-02')")
    conn.execute("INSERT INTO raw.r SELECT CAST(NULL AS VARCHAR)")  # DuckDB refuses it at the commit
    with pytest.raises(duckdb.ConstraintException):
        conn.execute("COMMIT")
    assert duck.execute("SELECT v, n FROM loyalty.t").fetchall() == [("a", 1)]
    assert conn.execute("SELECT v FROM loyalty.t").fetchall() == [("a",)]  # and the next statement reads it


def test_inserts_name_their_columns_and_keep_not_null(lake_table):
    conn, duck = lake_table
    conn.execute("INSERT INTO loyalty.t (day, v) VALUES (DATE '2024-06-01', 'a')")  # n not given: NULL
    conn.execute("INSERT INTO loyalty.t BY NAME SELECT 'b' AS v, DATE '2024-06-01' AS day")
    assert duck.execute("SELECT v, n, day FROM loyalty.t ORDER BY v").fetchall() == [
        ("a", None, date(2024, 6, 1)),
        ("b", None, date(2024, 6, 1)),
    ]
    with pytest.raises(ValueError, match="NOT NULL constraint failed: loyalty.t"):
        conn.execute("INSERT INTO loyalty.t (n, day) VALUES (3, DATE '2024-06-02')")
    with pytest.raises(NotImplementedError, match="partition column"):
        conn.execute("UPDATE loyalty.t SET day = DATE '2024-06-09'")
    assert duck.execute("SELECT count(*) FROM loyalty.t").fetchall() == [(2,)]


def test_views_read_the_steps_writes_when_queried(lake_table):
    conn, duck = lake_table
    conn.execute("CREATE OR REPLACE TEMP TABLE today AS SELECT 1 AS x")
    conn.execute("CREATE OR REPLACE TEMP VIEW moved AS SELECT count(*) AS n FROM today")
    conn.execute("INSERT INTO today SELECT 2")
    assert conn.execute("SELECT n FROM moved").fetchall() == [(2,)]  # a view, not a copy
    duck.execute("CREATE VIEW raw.t_count AS SELECT sum(n) AS n FROM loyalty.t")  # e.g. identity.current_ids
    conn.execute("BEGIN TRANSACTION")
    conn.execute("INSERT INTO loyalty.t VALUES ('a', 1, DATE '2024-06-01')")
    assert conn.execute("SELECT n FROM raw.t_count").fetchall() == [(1,)]  # read through its definition
    conn.execute("ROLLBACK")


def test_duckdb_writes_run_in_order_at_the_commit_and_are_not_read_stale(lake_table):
    conn, duck = lake_table
    conn.execute("CREATE TABLE IF NOT EXISTS raw.days (day DATE PRIMARY KEY)")
    conn.execute("BEGIN TRANSACTION")
    for day in (1, 2, 2):  # each marks the day once, as DuckDB runs them one after the other
        conn.execute(mark_built("raw.days"), {"day": date(2024, 6, day)})
    conn.execute("COMMIT")
    assert duck.execute("SELECT day FROM raw.days ORDER BY day").fetchall() == [
        (date(2024, 6, 1),),
        (date(2024, 6, 2),),
    ]
    conn.execute("BEGIN TRANSACTION")
    conn.execute("DELETE FROM raw.days WHERE day = $1", [date(2024, 6, 2)])
    with pytest.raises(NotImplementedError, match="raw.days read after a write"):
        conn.execute("SELECT count(*) FROM raw.days")  # Spark's copy would not show the delete
    conn.execute("ROLLBACK")


def test_a_lake_table_reads_in_its_declared_column_order(spark_session, tmp_path: Path, monkeypatch):
    """Spark reads a day-partitioned table's partition column last; statements read `*` by position (INSERT ...
    SELECT *, EXCEPT ALL), so the lake must read in the declared order once it has files, as before."""
    monkeypatch.setitem(LAKE_TABLES, "loyalty.m", "day")
    duck = duckdb.connect(str(tmp_path / "w.duckdb"))
    conn = SparkWarehouse(spark_session, duck, tmp_path / "lake")
    conn.execute("CREATE SCHEMA IF NOT EXISTS loyalty; CREATE TABLE loyalty.m (v VARCHAR, day DATE, n INT)")
    conn.execute("CREATE TEMP TABLE wanted AS SELECT 'a' AS v, DATE '2024-06-01' AS day, 1 AS n")
    for _ in range(2):  # on an empty table, then on one with files
        conn.execute("BEGIN TRANSACTION")
        assert [c[0] for c in conn.execute("SELECT * FROM loyalty.m").description] == ["v", "day", "n"]
        conn.execute("DELETE FROM loyalty.m")
        conn.execute("INSERT INTO loyalty.m SELECT * FROM wanted")
        conn.execute("COMMIT")
        assert conn.execute("SELECT * FROM loyalty.m EXCEPT ALL SELECT * FROM wanted").fetchall() == []
    assert duck.execute("SELECT * FROM loyalty.m").fetchall() == [("a", date(2024, 6, 1), 1)]
    conn.close()
    duck.close()


RERUN_RULES = """
journeys:
  - id: welcome
    audience: "purchase_count > 0"
    goal: "total_spend > 1000"
    stages:
      - id: hello
        steps: [{activation: hi}, {wait_days: 1}, {activation: thanks}]
"""


def rerun_scenario(root: Path) -> Inputs:
    """Two days with every chain at work: earns, a use, a refused use, a return, a merge (on day 2 an order keyed
    by card K1 carries u1's email), journey moves and activations."""
    inputs = Inputs(root)
    inputs.rules(RERUN_RULES)
    priced(inputs, coffee=5, cake=100)
    inputs.kafka("users", [("u1", {"name": "Ann", "email": "a@x.com"}, "2022-10-01T07:00:00")])
    inputs.kafka(
        "purchases",
        [
            ("u1", {"product_id": "cake"}, "2022-10-01T08:00:00"),
            ("K1", {"product_id": "coffee"}, "2022-10-01T09:00:00"),
            ("u2", {"product_id": "cake"}, "2022-10-01T10:00:00"),
            ("K1", {"product_id": "cake", "email": "a@x.com"}, "2022-10-02T08:00:00"),
        ],
    )
    redeem(inputs, ("u1", "r1", 50, "2022-10-02T09:00:00"), ("u2", "r2", 5000, "2022-10-02T09:30:00"))
    inputs.kafka("returns", [("u2", {"purchase_id": "purchases:0:2"}, "2022-10-02T11:00:00")])
    return inputs


def add_late_purchase(inputs: Inputs) -> None:
    """A late file: u2 also bought a coffee on day 1 (a real change of day 1, none of day 2's ledger rows)."""
    buy(inputs, ("u2", "coffee", "2022-10-01T12:00:00"), file="late.jsonl")


DAYS = ("2022-10-01", "2022-10-02")
LATE_REVISION = "SELECT change, txn_id, points, day, balance_change FROM points.ledger_revisions"


def runs_around_a_late_file(root: Path, engines: dict[str, tuple[str, str]]) -> dict[str, Inputs]:
    """Per warehouse name, days 1..2 on one engine, then (a late file for day 1 arrived) days 1..2 again on another."""
    inputs = rerun_scenario(root)
    runs = {name: Inputs(root) for name in engines}
    for phase in (0, 1):
        if phase:
            add_late_purchase(inputs)
        for name, run in runs.items():
            run.warehouse = root / f"{name}.duckdb"
            run.materialize(*DAYS, LOYALTY_ENGINE=engines[name][phase])
    return runs


@pytest.mark.e2e  # whole pipeline runs on both engines
def test_days_rebuilt_on_spark_give_duckdbs_tables_and_only_real_revisions(tmp_path: Path, spark_session):
    """Every day rebuilt on Spark after a late file (day 2 identically: no revision; day 1 with the late purchase:
    one revision): the same tables as the same runs on DuckDB, and as a clean run but for that revision. Days built
    on DuckDB then run on Spark are the returns scenario's day 3."""
    runs = runs_around_a_late_file(tmp_path, {"duckdb": ("duckdb", "duckdb"), "spark": ("spark", "spark")})
    assert differences(runs["duckdb"].warehouse, runs["spark"].warehouse) == {}
    assert runs["spark"].query(LATE_REVISION) == [("added", "earn:purchases:0:4", 5, date(2022, 10, 1), 5)]
    clean = Inputs(tmp_path)
    clean.warehouse = tmp_path / "clean.duckdb"
    clean.materialize(*DAYS)
    assert differences(clean.warehouse, runs["spark"].warehouse) == {"points.ledger_revisions": 1}
    assert runs["spark"].query("SELECT count(*) FROM points.ledger_days") == [(2,)]
    assert runs["spark"].query("SELECT count(*) FROM journey.journey_days") == [(2,)]


@pytest.mark.e2e
def test_a_spark_run_killed_in_the_ledger_then_run_again_gives_a_clean_runs_tables(tmp_path: Path):
    """kill -9 once the ledger has swapped in a day (its DuckDB markers committed or not), then the same day on
    Spark again: every table as one clean run's, with no revision (nothing changed)."""
    rerun_scenario(tmp_path)
    killed = tmp_path / "killed.duckdb"
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"} | {"LOYALTY_ENGINE": "spark"}
    cli = [str(Path(sys.executable).parent / "loyalty-pipeline"), "materialize", "--data-dir", str(tmp_path)]
    days = ["--from", DAYS[0], "--to", DAYS[0]]  # one day: a Spark day costs ~1 min
    victim = subprocess.Popen([*cli, "--warehouse", str(killed), *days], env=env, stdout=subprocess.DEVNULL)
    ledger = Path(f"{killed}.lake") / "points" / "point_transactions"
    deadline = time.time() + 1200
    while not ledger.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL  # killed mid-run, not finished
    again, clean = Inputs(tmp_path), Inputs(tmp_path)
    again.warehouse, clean.warehouse = killed, tmp_path / "clean.duckdb"
    again.materialize(DAYS[0], LOYALTY_ENGINE="spark")
    clean.materialize(DAYS[0])
    assert differences(clean.warehouse, killed) == {}
    assert again.query("SELECT count(*) FROM points.ledger_revisions") == [(0,)]
