"""The lake: the Parquet folders of the tables the Spark engine writes, and the DuckDB views that show them.

A lake table is a folder per day where it has a `day` column. The warehouse file shows each as a view of the same
name, so every DuckDB reader (the serving copy, the lookup, the summary) reads it unchanged. Its columns are declared
by the usual DDL, kept in an empty DuckDB table `lake.<schema>__<table>`.
"""

import shutil
from pathlib import Path

import duckdb
from sqlglot import exp

from loyalty_pipeline.lib.warehouse import columns_of, transaction

# The tables the Spark engine writes, and the column they are partitioned by (None: one set of files).
LAKE_TABLES: dict[str, str | None] = {
    "loyalty.enriched_purchases": "day",
    "loyalty.returns": "day",
    "loyalty.all_products": None,
    "loyalty.sales_totals": None,
    "loyalty.caffeine_index": None,
    "loyalty.promotions": None,
    "loyalty.tier_history": None,
    "loyalty.tier_status": None,
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


def to_spark_type(duckdb_type: str) -> str:
    return exp.DataType.build(duckdb_type, dialect="duckdb").sql("spark")


def to_duckdb_type(spark_type: str) -> str:
    return exp.DataType.build(spark_type, dialect="spark").sql("duckdb")


def literal(path: Path | str) -> str:
    """A path as an SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def lake_path(lake: Path, name: str) -> Path:
    """The folder of the lake table `name` (schema.table)."""
    return lake.joinpath(*name.split("."))


def view_name(name: str) -> str:
    return name.replace(".", "__")


class Lake:
    """SparkWarehouse's reads of the lake and its DuckDB views (the state is the warehouse's: spark.py)."""

    def _columns(self, name: str) -> list[tuple[str, str]]:
        """(column, DuckDB type) of a table: a lake table's declared columns, else the DuckDB table's."""
        source = f"lake.{view_name(name)}" if name in LAKE_TABLES else name
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
                self.duck.execute(f"COPY {name} TO {literal(self._path(name))} (FORMAT parquet{partition})")
            self.duck.execute(f"DROP TABLE {name}")
        declared = self._columns(name)
        if self._files(name):
            options = f", hive_partitioning = true, hive_types = {{'{part}': DATE}}" if part else ""
            source = f"read_parquet({literal(f'{self._path(name)}/**/*.parquet')}, union_by_name = true{options})"
            present = {column for column, _ in columns_of(self.duck, source)}
            columns = ", ".join(
                f'"{column}"' if column in present else f'NULL::{kind} AS "{column}"' for column, kind in declared
            )
        else:
            source, columns = f"lake.{view_name(name)}", ", ".join(f'"{column}"' for column, _ in declared)
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
