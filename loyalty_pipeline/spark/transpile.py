"""The Spark engine's statements: DuckDB's, transpiled to Spark SQL over this step's DataFrames, and the writes as
DataFrames of the new table contents. Temp tables are checkpointed temp views; tables DuckDB writes (ingest, the days
markers) are read by Spark from a Parquet copy made for the step.
"""

import uuid
from datetime import date, datetime

import sqlglot
from sqlglot import exp

from loyalty_pipeline.spark.lake import ALL_DAYS, LAKE_TABLES, literal, to_duckdb_type, to_spark_type, view_name
from loyalty_pipeline.spark.portable import to_spark


class Transpile:
    """SparkWarehouse's statements other than the transaction's (the state is the warehouse's: spark.py)."""

    def _query(self, query: exp.Expression, params):
        """A DataFrame of a query."""
        sql, args = self._spark_sql(query, params)
        return self.spark.sql(sql, args=args)

    def _spark_sql(self, query: exp.Expression, params) -> tuple[str, dict]:
        """A query's Spark SQL, table names bound to this step's frames and copies, and its parameters as args."""
        query = query.copy()
        for table in list(query.find_all(exp.Table)):
            if table.db:
                view = self._bind(table_name(table))
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

    def _bind(self, name: str) -> str:
        """The Spark view a warehouse table is read from."""
        if name in LAKE_TABLES:
            if name not in self.frames:
                self.frames[name] = self._read_lake(name)
            self.frames[name].createOrReplaceTempView(view_name(name))
        elif definition := self._duckdb_view(name):  # read through its definition: it sees this step's writes
            sql, _ = self._spark_sql(definition, {})
            self.spark.sql(f"CREATE OR REPLACE TEMP VIEW {view_name(name)} AS {sql}")
        elif any(written == name for written, _, _ in self.duck_writes):
            raise NotImplementedError(f"{name} read after a write to it in one transaction (Spark reads a copy)")
        elif name not in self.copied:
            folder = self.scratch / f"{name}-{uuid.uuid4().hex}"  # a table written since is copied again
            folder.parent.mkdir(parents=True, exist_ok=True)
            self.duck.execute(f"COPY (SELECT * FROM {name}) TO {literal(folder)} (FORMAT parquet, PER_THREAD_OUTPUT)")
            self.spark.read.schema(self._spark_schema(name)).parquet(str(folder)).createOrReplaceTempView(
                view_name(name)
            )
            self.copied.add(name)
        return view_name(name)

    def _duckdb_view(self, name: str) -> exp.Query | None:
        """The query of a DuckDB view (not a lake table's), e.g. identity.current_ids."""
        schema, table = name.split(".")
        found = self.duck.execute(
            "SELECT sql FROM duckdb_views() WHERE schema_name = $1 AND view_name = $2 AND NOT internal", [schema, table]
        ).fetchall()
        return sqlglot.parse_one(found[0][0], read="duckdb").expression if found else None

    def _declare(self, statement: exp.Expression, params) -> None:
        """DDL: a lake table's columns go to its `lake.` table (and a CREATE ... AS writes it); others run on DuckDB."""
        name = table_name(target_table(statement))
        if name not in LAKE_TABLES:
            self.duck.execute(statement.sql("duckdb"), params)
            return
        if isinstance(statement, exp.Create) and isinstance(statement.expression, exp.Query):
            frame = self._query(statement.expression, params)
            columns = ", ".join(f'"{f.name}" {to_duckdb_type(f.dataType.simpleString())}' for f in frame.schema.fields)
            self.duck.execute(f"CREATE OR REPLACE TABLE lake.{view_name(name)} ({columns})")
            self._write(name, frame, ALL_DAYS)
            return
        shadow = statement.copy()
        target_table(shadow).replace(exp.to_table(f"lake.{view_name(name)}"))
        self.duck.execute(shadow.sql("duckdb"))
        self._refresh_view(name)

    def _temp_table(self, statement: exp.Create, params) -> None:
        name = table_name(statement.this if isinstance(statement.this, exp.Table) else statement.this.this)
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
        name = table_name(target)
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
                (name, f"INSERT INTO {name} BY NAME SELECT * FROM read_parquet({literal(f'{folder}/*.parquet')})", {})
            )
        else:
            _replace_temp(name, self.spark.table(name).unionByName(rows))

    def _delete(self, statement: exp.Delete, params) -> None:
        name = table_name(statement.this)
        if name not in LAKE_TABLES and statement.this.db:  # a DuckDB table: its own statement, at the commit
            self._stage_duckdb(name, statement, params)
            return
        where = statement.args["where"].this if statement.args.get("where") else exp.true()
        kept = self._where(statement.this, exp.not_(exp.func("coalesce", where, exp.false())), params)
        if name in LAKE_TABLES:
            self._write(name, kept, self._days(name, self._where(statement.this, where, params)))
        else:
            _replace_temp(name, kept)

    def _reads_duckdb_alone(self, query: exp.Expression) -> bool:
        return all(table.db and table_name(table) not in LAKE_TABLES for table in query.find_all(exp.Table))

    def _update(self, statement: exp.Update, params) -> None:
        name = table_name(statement.this)
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
                [view_name(name)],
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
        table = exp.to_table(table_name(target)).as_(target.alias_or_name)
        return self._query(exp.select(f"{target.alias_or_name}.*").from_(table).where(condition.copy()), params)

    def _frame(self, name: str):
        self._bind(name)
        return self.frames[name]

    def _days(self, name: str, rows) -> set | None:
        part = LAKE_TABLES.get(name)
        if part is None:
            return ALL_DAYS
        return {row[0] for row in rows.select(part).distinct().collect()}


def table_name(table: exp.Table) -> str:
    return f"{table.db}.{table.name}" if table.db else table.name


def _replace_temp(name: str, frame) -> None:
    """A temp table's new contents, computed now: checkpointed, so they never read lake files a commit swaps."""
    frame.localCheckpoint(eager=True).createOrReplaceTempView(name)


def is_temp(statement: exp.Expression) -> bool:
    properties = statement.args.get("properties")
    return bool(properties and properties.find(exp.TemporaryProperty))


def target_table(statement: exp.Expression) -> exp.Table | None:
    target = statement.this
    if isinstance(target, exp.Schema):
        target = target.this
    return target if isinstance(target, exp.Table) and target.db else None
