"""The portable-SQL lint (portable.py): every statement downstream of ingest run on the demo is in the subset, and
each rule catches what it names."""

import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from loyalty_pipeline.defs.resources import Warehouse
from loyalty_pipeline.spark import portable
from loyalty_pipeline_tests.scenarios import SEED_DATA, Inputs

# What stays on one machine (docs/scale-out.md): ingest parses files and topics, the serving store is a file, and
# customer.recommendations is a DuckDB view of the state, read (and checked) on DuckDB.
ONE_MACHINE = {
    "ingest.py",
    "customers.py",
    "exports.py",
    "messages.py",
    "lines.py",
    "_serving_snapshot",
    "_recommendations",
}


def _on_one_machine() -> bool:
    frame = sys._getframe(2)
    while frame:
        if Path(frame.f_code.co_filename).name in ONE_MACHINE or frame.f_code.co_name in ONE_MACHINE:
            return True
        frame = frame.f_back
    return False


class Recorder:
    """A DuckDB connection that notes each statement (but ingest's and the serving copy's) and where it was run."""

    def __init__(self, conn, seen: dict[str, str]):
        self.conn, self.seen = conn, seen

    def _note(self, sql: str) -> None:
        if not _on_one_machine():
            caller = sys._getframe(2)
            self.seen.setdefault(sql, f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno}")

    def execute(self, sql, *args, **kwargs):
        self._note(sql)
        return self.conn.execute(sql, *args, **kwargs)

    def executemany(self, sql, *args, **kwargs):
        self._note(sql)
        return self.conn.executemany(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.conn, name)


@pytest.fixture(scope="module")
def statements(tmp_path_factory) -> dict[str, str]:
    """Every distinct statement the steps downstream of ingest run over the demo, with where it was run."""
    seen: dict[str, str] = {}
    original = Warehouse.get_connection

    @contextmanager
    def recording(self, portable: bool = False):
        with original(self, portable) as conn:
            yield Recorder(conn, seen)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Warehouse, "get_connection", recording)
        run = Inputs(SEED_DATA)
        run.warehouse = tmp_path_factory.mktemp("portable") / "warehouse.duckdb"
        run.materialize("2024-06-01", "2024-06-05")
    return seen


def test_every_statement_downstream_of_ingest_is_portable(statements):
    modules = {where.split(":")[0] for where in statements.values()}
    # every domain: the ledger, identity, journeys, profiles and recommendations, checks and metadata
    assert {"ledger.py", "identity.py", "journeys.py", "profiles.py", "recommend.py", "returns.py"} <= modules
    outside = {where: (sql[:200], portable.problems(sql)) for sql, where in statements.items()}
    assert {where: found for where, found in outside.items() if found[1]} == {}


@pytest.mark.parametrize(
    "sql, rule",
    [
        ("SELECT * FROM a ASOF LEFT JOIN b ON a.k = b.k AND a.t >= b.t", "ASOF JOIN"),
        ("SELECT l[2:3] FROM t", "list[a:b]"),
        ("SELECT hash(a) FROM t", "hash()"),
        ("SELECT row_number() OVER () FROM t", "without ORDER BY"),
        ("SELECT a, row_number() OVER (ORDER BY a) AS n FROM t JOIN u USING (k) QUALIFY n <= u.depth", "QUALIFY"),
        ("WITH RECURSIVE w(v) AS (SELECT 1 UNION SELECT v FROM w) SELECT * FROM w", "recursive UNION"),
        ("SELECT * REPLACE (1 AS a) FROM t", "REPLACE"),
        ("SELECT a FROM t UNION ALL BY NAME SELECT a FROM u", "UNION BY NAME"),
        ("INSERT OR IGNORE INTO t SELECT 1", "INSERT OR"),
        ("UPDATE t SET a = u.a FROM u WHERE t.k = u.k", "UPDATE ... FROM"),
        ("CREATE TEMP MACRO f(x) AS x + 1", "CREATE MACRO"),
        ("SELECT arg_max(a, (b, c)) FROM t", "tuple"),
        ("SELECT to_json(r) FROM t AS r", "to_json(row)"),
        ("SELECT day - linked_on FROM t", "date - date"),
        ("SELECT price / n FROM t", "a / b"),
        ("SELECT CAST(CAST(price AS DOUBLE) / n AS DECIMAL(18,2)) FROM t", "rounds differently"),
        ("SELECT json_valid(x) FROM t", "json_valid"),
        ("SELECT range::DATE FROM range($first, $end, INTERVAL 1 DAY)", "table function"),
        ("SELECT * FROM read_parquet('x.parquet')", "table function"),
        ("WITH h AS (SELECT 1 AS x) SELECT * FROM h, (WITH h AS (SELECT 2 AS x) SELECT x FROM h) AS i", "CTE name"),
        ("SELECT purchased_at + to_days($n) FROM t", "to_days"),
        ("SELECT k, list(v ORDER BY t) FROM t GROUP BY k", "keeps no order"),
    ],
)
def test_each_rule_catches_its_construct(sql: str, rule: str):
    assert any(rule in problem for problem in portable.problems(sql)), portable.problems(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT a.k, b.v FROM a LEFT JOIN b ON b.id = a.k AND a.t >= b.t AND (b.until IS NULL OR a.t < b.until)",
        "SELECT CAST(price AS DOUBLE) / n, date_diff('day', linked_on, day), day - 1 FROM t",
        "SELECT (CAST(round(CAST(price AS DOUBLE) / n * 100) AS BIGINT) * 0.01)::DECIMAL(18,2) FROM t",
        "UPDATE t AS p SET a = (SELECT max(u.a) FROM u WHERE u.k = p.k) WHERE p.k IN (SELECT k FROM u)",
        "SELECT * EXCLUDE (day) FROM t QUALIFY row_number() OVER (PARTITION BY k ORDER BY t DESC) = 1",
        "SELECT to_json(struct_pack(a := r.a, t := CAST(r.t AS VARCHAR)))::VARCHAR FROM t AS r",
        "SELECT list_transform(l, lambda x, i: l[i] + coalesce(list_sum(list_slice(l, 1, i - 1)), 0)) FROM t",
        "WITH RECURSIVE w(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM w WHERE v < 3) SELECT * FROM w",
        "SELECT list_has_any(a, b), list_has_all(a, b) FROM t",
        "SELECT k, list_sort(list({'t': t, 'v': v})) FROM t GROUP BY k",
    ],
)
def test_the_portable_forms_pass(sql: str):
    assert portable.problems(sql) == []
