"""The Spark engine (LOYALTY_ENGINE=spark): the warehouse's portable SQL, transpiled by sqlglot, run on Spark.

`SparkWarehouse` is the connection a step downstream of ingest gets instead of DuckDB's: it takes the same
statements (see `portable.py` for the subset) and parameters.

* Tables the engine writes (LAKE_TABLES) are Parquet under the lake folder, a folder per day where the table has
  a `day` column. The warehouse file shows each as a view of the same name, so every DuckDB reader (the serving
  copy, the lookup, the summary) reads them unchanged. Their columns are declared by the usual DDL, kept in an
  empty DuckDB table `lake.<schema>__<table>`.
* Tables DuckDB writes (ingest, the days markers) are read by Spark from a Parquet copy made for the step.
* A transaction is write-then-swap: each write is a new DataFrame of the table; COMMIT writes the days it changed
  beside the table, then swaps those day folders in. Temp tables are checkpointed temp views.
"""

import shutil
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb
import sqlglot
from sqlglot import exp

from loyalty_pipeline.lib.warehouse import columns_of, transaction
from loyalty_pipeline.spark.portable import to_spark

# The tables the Spark engine writes, and the column they are partitioned by (None: one set of files).
LAKE_TABLES: dict[str, str | None] = {
    "loyalty.enriched_purchases": "day",
    "loyalty.returns": "day",
    "loyalty.all_products": None,
    "loyalty.sales_totals": None,
    "loyalty.caffeine_index": None,
    "loyalty.promotions": None,
    "points.point_balances": None,
    "journey.journey_state": "entered_at",
    "journey.activations": "activated_on",
    "journey.reached_activations": "day",
    "journey.profile_totals": None,
    "journey.profile_totals_as_of": None,
    "identity.id_graph": "linked_on",
    "identity.weak_values": "day",
    "identity.ambiguous_values": "day",
    "identity.crowded_values": "day",
    "identity.merges": "day",
    "identity.export_records": "day",
    "points.point_transactions": "day",
    "points.lot_allocations": "day",
    "customer.profiles": None,
    "customer.identifiers": None,
    "customer.rec_baskets": None,
    "customer.rec_large_baskets": None,
    "customer.rec_counts": None,
}
ALL_DAYS = None  # a whole table changed


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


def to_spark_type(duckdb_type: str) -> str:
    return exp.DataType.build(duckdb_type, dialect="duckdb").sql("spark")


def to_duckdb_type(spark_type: str) -> str:
    return exp.DataType.build(spark_type, dialect="spark").sql("duckdb")


@dataclass
class Result:
    """What `execute` returns: rows and a DB-API style description (name, type)."""

    rows: list[tuple] = field(default_factory=list)
    description: list[tuple] = field(default_factory=list)

    def fetchall(self) -> list[tuple]:
        return self.rows

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None


def _literal(path: Path | str) -> str:
    """A path as an SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def lake_path(lake: Path, name: str) -> Path:
    """The folder of the lake table `name` (schema.table)."""
    return lake.joinpath(*name.split("."))


def _name(table: exp.Table) -> str:
    return f"{table.db}.{table.name}" if table.db else table.name


def _view(name: str) -> str:
    return name.replace(".", "__")


class SparkWarehouse:
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

    # ------------------------------------------------------------------------------------------------ statements

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
        elif isinstance(statement, exp.Create | exp.Alter) and not _is_temp(statement) and _target(statement):
            self._declare(statement, params)
        elif isinstance(statement, exp.Create) and statement.kind == "VIEW":  # a temp view: read when queried
            sql, args = self._spark_sql(statement.expression, params)
            if args:
                raise NotImplementedError(f"a temp view with parameters (Spark's views take none): {sql[:80]}")
            self.spark.sql(f"CREATE OR REPLACE TEMP VIEW {_name(statement.this)} AS {sql}")
        elif isinstance(statement, exp.Create):  # a temp table
            self._temp_table(statement, params)
        elif isinstance(statement, exp.Drop):
            for table in statement.args.get("tables") or [statement.this]:
                self.spark.catalog.dropTempView(_name(table))
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

    def _query(self, query: exp.Expression, params):
        """A DataFrame of a query."""
        sql, args = self._spark_sql(query, params)
        return self.spark.sql(sql, args=args)

    def _spark_sql(self, query: exp.Expression, params) -> tuple[str, dict]:
        """A query's Spark SQL, table names bound to this step's frames and copies, and its parameters as args."""
        query = query.copy()
        for table in list(query.find_all(exp.Table)):
            if table.db:
                view = self._bind(_name(table))
                table.set("alias", exp.TableAlias(this=exp.to_identifier(table.alias_or_name)))
                table.set("db", None)
                table.set("this", exp.to_identifier(view))
        args = {}
        for placeholder in list(query.find_all(exp.Placeholder)):
            n = placeholder.name
            value = params[int(n) - 1] if n.isdigit() else params[n]
            if isinstance(value, date):  # as text: py4j cannot pass dates before 1583 (date.min: since the start)
                kind = "TIMESTAMP" if isinstance(value, datetime) else "DATE"
                value = value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
                placeholder.replace(exp.cast(placeholder.copy(), kind))
            args[f"p{n}" if n.isdigit() else n] = value
        return to_spark(query), args

    # ------------------------------------------------------------------------------------------------ tables

    def _bind(self, name: str) -> str:
        """The Spark view a warehouse table is read from."""
        if name in LAKE_TABLES:
            if name not in self.frames:
                self.frames[name] = self._read_lake(name)
            self.frames[name].createOrReplaceTempView(_view(name))
        elif definition := self._duckdb_view(name):  # read through its definition: it sees this step's writes
            sql, _ = self._spark_sql(definition, {})
            self.spark.sql(f"CREATE OR REPLACE TEMP VIEW {_view(name)} AS {sql}")
        elif any(written == name for written, _, _ in self.duck_writes):
            raise NotImplementedError(f"{name} read after a write to it in one transaction (Spark reads a copy)")
        elif name not in self.copied:
            folder = self.scratch / f"{name}-{uuid.uuid4().hex}"  # a table written since is copied again
            folder.parent.mkdir(parents=True, exist_ok=True)
            self.duck.execute(f"COPY (SELECT * FROM {name}) TO {_literal(folder)} (FORMAT parquet, PER_THREAD_OUTPUT)")
            self.spark.read.schema(self._spark_schema(name)).parquet(str(folder)).createOrReplaceTempView(_view(name))
            self.copied.add(name)
        return _view(name)

    def _duckdb_view(self, name: str) -> exp.Query | None:
        """The query of a DuckDB view (not a lake table's), e.g. identity.current_ids."""
        schema, table = name.split(".")
        found = self.duck.execute(
            "SELECT sql FROM duckdb_views() WHERE schema_name = $1 AND view_name = $2 AND NOT internal", [schema, table]
        ).fetchall()
        return sqlglot.parse_one(found[0][0], read="duckdb").expression if found else None

    def _columns(self, name: str) -> list[tuple[str, str]]:
        """(column, DuckDB type) of a table: a lake table's declared columns, else the DuckDB table's."""
        source = f"lake.{_view(name)}" if name in LAKE_TABLES else name
        return columns_of(self.duck, source)

    def _spark_schema(self, name: str) -> str:
        return ", ".join(f"`{column}` {to_spark_type(kind)}" for column, kind in self._columns(name))

    def _path(self, name: str) -> Path:
        return lake_path(self.lake, name)

    def _files(self, name: str) -> list[Path]:
        return sorted(self._path(name).glob("**/*.parquet"))

    def _read_lake(self, name: str):
        """The table in its declared column order: Spark reads a partition column last, and statements read `*` by
        position (INSERT ... SELECT *, EXCEPT ALL, UNION ALL)."""
        schema = self._spark_schema(name)
        if not self._files(name):
            return self.spark.createDataFrame([], schema)
        frame = self.spark.read.schema(schema).option("basePath", str(self._path(name))).parquet(str(self._path(name)))
        return frame.select(*(f"`{column}`" for column, _ in self._columns(name)))

    def _declare(self, statement: exp.Expression, params) -> None:
        """DDL: a lake table's columns go to its `lake.` table (and a CREATE ... AS writes it); others run on DuckDB."""
        name = _name(_target(statement))
        if name not in LAKE_TABLES:
            self.duck.execute(statement.sql("duckdb"), params)
            return
        if isinstance(statement, exp.Create) and isinstance(statement.expression, exp.Query):
            frame = self._query(statement.expression, params)
            columns = ", ".join(f'"{f.name}" {to_duckdb_type(f.dataType.simpleString())}' for f in frame.schema.fields)
            self.duck.execute(f"CREATE OR REPLACE TABLE lake.{_view(name)} ({columns})")
            self._write(name, frame, ALL_DAYS)
            return
        shadow = statement.copy()
        _target(shadow).replace(exp.to_table(f"lake.{_view(name)}"))
        self.duck.execute(shadow.sql("duckdb"))
        self._refresh_view(name)

    def _temp_table(self, statement: exp.Create, params) -> None:
        name = _name(statement.this if isinstance(statement.this, exp.Table) else statement.this.this)
        if isinstance(statement.expression, exp.Query):
            frame = self._query(statement.expression, params)
        else:
            columns = ", ".join(
                f"`{c.name}` {to_spark_type(c.args['kind'].sql('duckdb'))}" for c in statement.this.expressions
            )
            frame = self.spark.createDataFrame([], columns)
        _replace_temp(name, frame)

    def _insert(self, statement: exp.Insert, params) -> None:
        target = statement.this if isinstance(statement.this, exp.Table) else statement.this.this
        name = _name(target)
        if name not in LAKE_TABLES and target.db and self._reads_duckdb_alone(statement.expression):
            self._stage_duckdb(name, statement, params)  # e.g. a day marked built: DuckDB runs it at the commit
            return
        if isinstance(statement.expression, exp.Values):
            values = sqlglot.parse_one(f"SELECT * FROM {statement.expression.sql('duckdb')} AS v", read="duckdb")
            rows = self._query(values, params)
        else:
            rows = self._query(statement.expression, params)
        types = self._types(name)
        listed = [c.name for c in statement.this.expressions] if isinstance(statement.this, exp.Schema) else None
        if not statement.args.get("by_name"):
            rows = rows.toDF(*(listed or list(types)[: len(rows.columns)]))
        from pyspark.sql.functions import lit  # (the optional [spark] extra: imported when used)

        # columns not given are NULL, as in DuckDB
        rows = rows.select(
            *(
                (rows[column] if column in rows.columns else lit(None)).cast(kind).alias(column)
                for column, kind in types.items()
            )
        )
        self._check_not_null(name, rows)
        if name in LAKE_TABLES:
            self._write(name, self._frame(name).unionByName(rows), self._days(name, rows))
        elif "." in name:  # a DuckDB table: staged, inserted at the commit
            folder = self.scratch / f"insert-{uuid.uuid4().hex}"
            rows.write.parquet(str(folder))
            self.duck_writes.append(
                (name, f"INSERT INTO {name} BY NAME SELECT * FROM read_parquet({_literal(f'{folder}/*.parquet')})", {})
            )
        else:
            _replace_temp(name, self.spark.table(name).unionByName(rows))

    def _delete(self, statement: exp.Delete, params) -> None:
        name = _name(statement.this)
        if name not in LAKE_TABLES and statement.this.db:  # a DuckDB table: its own statement, at the commit
            self._stage_duckdb(name, statement, params)
            return
        where = statement.args["where"].this if statement.args.get("where") else exp.true()
        kept = self._where(statement.this, exp.not_(exp.func("coalesce", where, exp.false())), params)
        if name in LAKE_TABLES:
            self._write(name, kept, self._days(name, self._where(statement.this, where, params)))
        else:
            _replace_temp(name, kept)

    def _stage_duckdb(self, name: str, statement: exp.Expression, params) -> None:
        """A write to a DuckDB table that reads nothing of Spark's: DuckDB runs it, in order, at the commit."""
        used = {p.name for p in statement.find_all(exp.Placeholder)}
        kept = {k: v for k, v in params.items() if k in used} if isinstance(params, dict) else params
        self.duck_writes.append((name, statement.sql("duckdb"), kept))

    def _reads_duckdb_alone(self, query: exp.Expression) -> bool:
        return all(table.db and _name(table) not in LAKE_TABLES for table in query.find_all(exp.Table))

    def _update(self, statement: exp.Update, params) -> None:
        name = _name(statement.this)
        where = statement.args["where"].this if statement.args.get("where") else exp.true()
        sets = {eq.this.name: eq.expression for eq in statement.expressions}
        if LAKE_TABLES.get(name) in sets:
            raise NotImplementedError(f"{name}: UPDATE of the partition column {LAKE_TABLES[name]}: delete and insert")
        columns = list(self._types(name))
        select = exp.select(
            *(
                exp.Case(
                    ifs=[exp.If(this=exp.func("coalesce", where, exp.false()), true=sets[c])], default=exp.column(c)
                ).as_(c)
                if c in sets
                else exp.column(c)
                for c in columns
            )
        ).from_(exp.to_table(name).as_(statement.this.alias_or_name))
        updated = self._query(select, params)
        self._check_not_null(name, updated.select(*sets))
        if name in LAKE_TABLES:
            self._write(name, updated, self._days(name, self._where(statement.this, where, params)))
        else:
            _replace_temp(name, updated)

    def _check_not_null(self, name: str, rows) -> None:
        """DuckDB's NOT NULL constraints of a lake table, on the rows a statement writes (Parquet has none)."""
        if name not in LAKE_TABLES:
            return
        required = [
            column
            for (column,) in self.duck.execute(
                "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'lake' AND table_name = $1 "
                "AND NOT is_nullable",
                [_view(name)],
            ).fetchall()
            if column in rows.columns
        ]
        if required and rows.where(" OR ".join(f"`{c}` IS NULL" for c in required)).limit(1).count():
            raise ValueError(f"NOT NULL constraint failed: {name}, a NULL in one of {', '.join(required)}")

    def _types(self, name: str) -> dict[str, str]:
        """Column -> Spark type of a warehouse table or a temp table (by name)."""
        if "." in name:
            return {column: to_spark_type(kind) for column, kind in self._columns(name)}
        return {f.name: f.dataType.simpleString() for f in self.spark.table(name).schema.fields}

    def _where(self, target: exp.Table, condition: exp.Expression, params):
        table = exp.to_table(_name(target)).as_(target.alias_or_name)
        return self._query(exp.select(f"{target.alias_or_name}.*").from_(table).where(condition.copy()), params)

    def _frame(self, name: str):
        self._bind(name)
        return self.frames[name]

    def _days(self, name: str, rows) -> set | None:
        part = LAKE_TABLES.get(name)
        if part is None:
            return ALL_DAYS
        return {row[0] for row in rows.select(part).distinct().collect()}

    def _write(self, name: str, frame, days) -> None:
        frame = frame.localCheckpoint(eager=True)  # its lake files may be swapped at the commit
        self.frames[name] = frame
        frame.createOrReplaceTempView(_view(name))  # what the step's temp views and DuckDB views read
        before = self.changed.get(name, set())
        self.changed[name] = ALL_DAYS if days is ALL_DAYS or before is ALL_DAYS else before | days

    # ------------------------------------------------------------------------------------------------ commit

    def _commit(self) -> None:
        """All or nothing as far as it can be: the changed days are written beside their tables first, then the DuckDB
        writes run in a transaction, the day folders are renamed in, the views refreshed, and DuckDB commits."""
        staged: dict[str, tuple[Path, set | None]] = {}
        try:
            for name, days in self.changed.items():
                staged[name] = self._stage(name, self.frames[name], days)
            with transaction(self.duck):
                for _, statement, params in self.duck_writes:
                    self.duck.execute(statement, params)
                for name, (staging, days) in staged.items():
                    self._swap_in(name, staging, days)
                    self._refresh_view(name)
        finally:
            for staging, _ in staged.values():
                shutil.rmtree(staging, ignore_errors=True)
            for name, _, _ in self.duck_writes:
                self.copied.discard(name)
            self.frames = {name: frame for name, frame in self.frames.items() if name not in self.changed}
            self.changed, self.duck_writes, self.in_transaction = {}, [], False

    def _stage(self, name: str, frame, days) -> tuple[Path, set | None]:
        """The table's new files, or its changed days' (all of them when a whole table changed), beside it."""
        path, part = self._path(name), LAKE_TABLES[name]
        staging = path.parent / f".{path.name}-{uuid.uuid4().hex}"
        if days is not ALL_DAYS and part:
            frame = frame.where(frame[part].isin(list(days)))
        frame.write.partitionBy(*([part] if part else [])).parquet(str(staging))
        return staging, days

    def _swap_in(self, name: str, staging: Path, days) -> None:
        """Renames the staged folders in: the old one moves aside first, so a reader finds one or the other (a
        reader between the two renames, or a crash there, finds the day missing: see docs/scale-out.md)."""
        path, part = self._path(name), LAKE_TABLES[name]
        aside = path.parent / f".{path.name}-old-{uuid.uuid4().hex}"
        if days is ALL_DAYS or part is None:
            if path.exists():
                path.rename(aside)
            staging.rename(path)
        else:
            aside.mkdir(parents=True)
            path.mkdir(parents=True, exist_ok=True)
            for day in days:
                folder = f"{part}={day}"
                if (path / folder).exists():
                    (path / folder).rename(aside / folder)
                if (staging / folder).exists():
                    (staging / folder).rename(path / folder)
        shutil.rmtree(aside, ignore_errors=True)

    def _refresh_view(self, name: str) -> None:
        """The DuckDB view of a lake table: its files in the declared column order (NULL for a column added since
        they were written), or the empty declared table."""
        schema, table = name.split(".")
        kind = self.duck.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
            [schema, table],
        ).fetchall()
        part = LAKE_TABLES[name]
        if kind == [("BASE TABLE",)]:  # a table DuckDB wrote before the engine was switched: its rows move to the lake
            if not self._files(name) and self.duck.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]:
                partition = f", PARTITION_BY ({part})" if part else ""
                self._path(name).parent.mkdir(parents=True, exist_ok=True)
                self.duck.execute(f"COPY {name} TO {_literal(self._path(name))} (FORMAT parquet{partition})")
            self.duck.execute(f"DROP TABLE {name}")
        declared = self._columns(name)
        if self._files(name):
            options = f", hive_partitioning = true, hive_types = {{'{part}': DATE}}" if part else ""
            source = f"read_parquet({_literal(f'{self._path(name)}/**/*.parquet')}, union_by_name = true{options})"
            present = {column for column, _ in columns_of(self.duck, source)}
            columns = ", ".join(
                f'"{column}"' if column in present else f'NULL::{kind} AS "{column}"' for column, kind in declared
            )
        else:
            source, columns = f"lake.{_view(name)}", ", ".join(f'"{column}"' for column, _ in declared)
        self.duck.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT {columns} FROM {source}")


def to_duckdb_tables(duck: duckdb.DuckDBPyConnection, lake: Path) -> None:
    """Back from the Spark engine: each lake table becomes a DuckDB table again, and its lake folder goes (so a
    later switch to Spark moves the newer rows, not these)."""
    views = {f"{s}.{t}" for s, t in duck.execute("SELECT schema_name, view_name FROM duckdb_views()").fetchall()}
    for name in LAKE_TABLES.keys() & views:
        temporary = f"{name}__from_lake"
        with transaction(duck):
            duck.execute(f"CREATE TABLE {temporary} AS SELECT * FROM {name}")
            duck.execute(f"DROP VIEW {name}")
            duck.execute(f"ALTER TABLE {temporary} RENAME TO {name.split('.')[1]}")
        shutil.rmtree(lake_path(lake, name), ignore_errors=True)


def _replace_temp(name: str, frame) -> None:
    """A temp table's new contents, computed now: checkpointed, so they never read lake files a commit swaps."""
    frame.localCheckpoint(eager=True).createOrReplaceTempView(name)


def _is_temp(statement: exp.Expression) -> bool:
    properties = statement.args.get("properties")
    return bool(properties and properties.find(exp.TemporaryProperty))


def _target(statement: exp.Expression) -> exp.Table | None:
    target = statement.this
    if isinstance(target, exp.Schema):
        target = target.this
    return target if isinstance(target, exp.Table) and target.db else None
