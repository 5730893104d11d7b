"""SQL helpers every asset uses to write the warehouse the same way: one transaction, rows as parameters, counts."""

from contextlib import contextmanager
from datetime import date

import duckdb

REJECTED_DDL = """
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS raw.rejected_records (
    source VARCHAR NOT NULL,   -- e.g. kafka:purchases, s3:historical_purchases, points:redemptions
    location VARCHAR NOT NULL, -- file:line, or the Kafka coordinates of a refused message
    reason VARCHAR NOT NULL,
    raw VARCHAR,
    day DATE                   -- the partition it belongs to; NULL when no event time could be read
);
"""

# What the sources hold beyond the days loaded: a run of a later day on an empty warehouse must not start a
# day-by-day chain (ledger, id graph) from nothing while the inputs hold earlier days.
SOURCE_FILES_DDL = """
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS raw.kafka_files (  -- every snapshot file read: which days it holds, at which version
    topic VARCHAR NOT NULL, file VARCHAR NOT NULL, version VARCHAR NOT NULL, first_day DATE, last_day DATE
);
CREATE TABLE IF NOT EXISTS raw.historical_files (  -- the historical files last listed, whichever days were run
    s3_key VARCHAR NOT NULL, day DATE NOT NULL
);
"""


def first_source_day_before(conn: duckdb.DuckDBPyConnection, day: date, topics: list[str]) -> date | None:
    """The first day before `day` held by the snapshot files read of `topics`, or by the historical files listed."""
    return conn.execute(
        """SELECT min(day) FROM (
               SELECT min(first_day) AS day FROM raw.kafka_files WHERE list_contains($topics, topic) AND first_day < $day
               UNION ALL SELECT min(day) FROM raw.historical_files WHERE day < $day)""",
        {"day": day, "topics": topics},
    ).fetchall()[0][0]


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection):
    """All or nothing: a failed write leaves the previous state of every table it touched."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def rows_differing(conn: duckdb.DuckDBPyConnection, left: str, right: str, params=None) -> int:
    """How many rows two queries do not share (their symmetric difference, duplicates counted)."""
    return count(conn, f"(({left}) EXCEPT ALL ({right})) UNION ALL (({right}) EXCEPT ALL ({left}))", params)


def count(conn: duckdb.DuckDBPyConnection, sql: str, params: list | dict | None = None) -> int:
    return conn.execute(f"SELECT count(*) FROM ({sql})", params or []).fetchall()[0][0]


def insert_rows(conn: duckdb.DuckDBPyConnection, table: str, rows: list[list]) -> None:
    """Insert a few Python-side rows (rule values, file lists) as parameters, never as SQL text."""
    if rows:
        marks = ", ".join(f"${i + 1}" for i in range(len(rows[0])))
        conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


def spans(states: str) -> str:
    """The `states` (id, t, ...) rows, at most one per (id, t), with `until`: the next state's t of the same id
    (NULL for the last). An event of id at time x is in the state whose span holds x (see `in_span`).

    The ASOF JOIN written as an equi-join on id and a range, which Spark runs as DuckDB does, at the same cost."""
    return f"SELECT *, lead(t) OVER (PARTITION BY id ORDER BY t) AS until FROM ({states}) AS s"


def in_span(span: str, x: str) -> str:
    """The join condition: time `x` is in the span (alias) `span`: its own t included, the next state's excluded."""
    return f"{x} >= {span}.t AND ({span}.until IS NULL OR {x} < {span}.until)"


def columns_of(conn: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    """(name, type) of each column of `table`, in order."""
    return [(name, str(kind)) for name, kind, *_ in conn.execute(f"SELECT * FROM {table} LIMIT 0").description]


def row_json(conn: duckdb.DuckDBPyConnection, table: str, alias: str) -> str:
    """SQL for the JSON text of a row of `table` (alias `alias`), the same on DuckDB and Spark: `to_json` of a struct
    of its columns, timestamps as text (DuckDB's `to_json(row)` has no Spark counterpart)."""
    fields = ", ".join(
        f"{name} := CAST({alias}.{name} AS VARCHAR)" if kind.startswith("TIMESTAMP") else f"{name} := {alias}.{name}"
        for name, kind in columns_of(conn, table)
    )
    return f"to_json(struct_pack({fields}))::VARCHAR"
