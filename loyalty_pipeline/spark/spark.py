"""The Spark engine (LOYALTY_ENGINE=spark): the warehouse's portable SQL, transpiled by sqlglot, run on Spark.

`SparkWarehouse` is the connection a step downstream of ingest gets instead of DuckDB's: it takes the same
statements (see `portable.py` for the subset) and parameters. transpile.py runs them, lake.py holds the tables the
engine writes (Parquet, shown to DuckDB as views), commit.py makes a transaction's writes visible together.
"""

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import sqlglot
from sqlglot import exp

from loyalty_pipeline.spark.commit import Commit
from loyalty_pipeline.spark.lake import LAKE_TABLES as LAKE_TABLES  # re-exported: the tests name it here
from loyalty_pipeline.spark.lake import Lake, to_duckdb_type
from loyalty_pipeline.spark.transpile import Transpile, is_temp, table_name, target_table


def spark_config(master: str) -> dict[str, str]:
    """The session every step uses: UTC, timestamps without time zone as DuckDB's, few shuffle partitions."""
    return {
        "spark.master": master,
        "spark.app.name": "loyalty_pipeline",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.timestampType": "TIMESTAMP_NTZ",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.ansi.enabled": "false",  # DuckDB's integer and decimal arithmetic, not ANSI overflow errors
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.jsonGenerator.ignoreNullFields": "false",  # to_json writes null fields, as DuckDB does
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.sql.cteRecursionLevelLimit": "-1",  # DuckDB's recursive CTEs (the ledger's fold) have no limit
        "spark.sql.cteRecursionRowLimit": "-1",
    }


@dataclass
class Result:
    """What `execute` returns: rows and a DB-API style description (name, type)."""

    rows: list[tuple] = field(default_factory=list)
    description: list[tuple] = field(default_factory=list)

    def fetchall(self) -> list[tuple]:
        return self.rows

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None


class SparkWarehouse(Transpile, Lake, Commit):
    engine = "spark"  # what the change log keys a consumer's rows by (a DuckDB connection has no such attribute)

    def __init__(self, spark, duck: duckdb.DuckDBPyConnection, lake: Path):
        self.spark, self.duck, self.lake = spark, duck, lake
        self.scratch = lake / "_steps" / uuid.uuid4().hex  # this step's copies of DuckDB tables
        self.frames: dict[str, object] = {}  # lake table -> its current DataFrame (with this step's writes)
        self.changed: dict[str, set | None] = {}  # lake table -> days changed (ALL_DAYS: all) since the commit
        self.copied: set[str] = set()  # DuckDB tables copied for this step
        self.duck_writes: list[tuple[str, str, dict]] = []  # (DuckDB table, statement, parameters) run at the commit
        self.in_transaction = False
        self.duck.execute("CREATE SCHEMA IF NOT EXISTS lake")

    def execute(self, sql: str, params: dict | list | None = None) -> Result:
        result = Result()
        for statement in sqlglot.parse(sql, read="duckdb"):
            if statement is not None and not isinstance(statement, exp.Semicolon):
                result = self._run(statement, params or {})
        return result

    def executemany(self, sql: str, rows: list[list]) -> None:
        """`INSERT ... VALUES ($1, ...)` of many rows is one statement of many tuples (a Spark job per row is slow)."""
        statement = sqlglot.parse_one(sql, read="duckdb")
        values = statement.expression if isinstance(statement, exp.Insert) else None
        if not (rows and isinstance(values, exp.Values) and len(values.expressions) == 1):
            for row in rows:
                self.execute(sql, row)
            return
        width = len(rows[0])
        values.set(
            "expressions",
            [
                exp.Tuple(expressions=[exp.Placeholder(this=str(r * width + i + 1)) for i in range(width)])
                for r in range(len(rows))
            ],
        )
        self._run(statement, [value for row in rows for value in row])

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        for name in self.spark.catalog.listTables():
            if name.isTemporary:
                self.spark.catalog.dropTempView(name.name)

    def _run(self, statement: exp.Expression, params) -> Result:
        if isinstance(statement, exp.Transaction):
            self.in_transaction = True
        elif isinstance(statement, exp.Commit):
            self._commit()
        elif isinstance(statement, exp.Rollback):
            self.frames, self.changed, self.duck_writes, self.in_transaction = {}, {}, [], False
        elif isinstance(statement, exp.Create) and statement.kind == "SCHEMA":
            self.duck.execute(statement.sql("duckdb"))
        elif isinstance(statement, exp.Create | exp.Alter) and not is_temp(statement) and target_table(statement):
            self._declare(statement, params)
        elif isinstance(statement, exp.Create) and statement.kind == "VIEW":  # a temp view: read when queried
            sql, args = self._spark_sql(statement.expression, params)
            if args:
                raise NotImplementedError(f"a temp view with parameters (Spark's views take none): {sql[:80]}")
            self.spark.sql(f"CREATE OR REPLACE TEMP VIEW {table_name(statement.this)} AS {sql}")
        elif isinstance(statement, exp.Create):  # a temp table
            self._temp_table(statement, params)
        elif isinstance(statement, exp.Drop):
            for table in statement.args.get("tables") or [statement.this]:
                self.spark.catalog.dropTempView(table_name(table))
        elif isinstance(statement, exp.Insert):
            self._insert(statement, params)
        elif isinstance(statement, exp.Delete):
            self._delete(statement, params)
        elif isinstance(statement, exp.Update):
            self._update(statement, params)
        else:
            frame = self._query(statement, params)
            return Result(
                [tuple(row) for row in frame.collect()],
                [(f.name, to_duckdb_type(f.dataType.simpleString())) for f in frame.schema.fields],
            )
        if not self.in_transaction and (self.changed or self.duck_writes):
            self._commit()
        return Result()
