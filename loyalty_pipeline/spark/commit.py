"""A Spark engine transaction is write-then-swap: each write is a new DataFrame of the table; COMMIT writes the days
it changed beside the table, then swaps those day folders in. DuckDB tables' writes run at the commit, in order.
"""

import shutil
import uuid
from pathlib import Path

from sqlglot import exp

from loyalty_pipeline.lib.warehouse import transaction
from loyalty_pipeline.spark.lake import ALL_DAYS, LAKE_TABLES, view_name


class Commit:
    """SparkWarehouse's writes, kept until the commit, and the commit (the state is the warehouse's: spark.py)."""

    def _write(self, name: str, frame, days) -> None:
        frame = frame.localCheckpoint(eager=True)  # its lake files may be swapped at the commit
        self.frames[name] = frame
        frame.createOrReplaceTempView(view_name(name))  # what the step's temp views and DuckDB views read
        before = self.changed.get(name, set())
        self.changed[name] = ALL_DAYS if days is ALL_DAYS or before is ALL_DAYS else before | days

    def _stage_duckdb(self, name: str, statement: exp.Expression, params) -> None:
        """A write to a DuckDB table that reads nothing of Spark's: DuckDB runs it, in order, at the commit."""
        used = {p.name for p in statement.find_all(exp.Placeholder)}
        kept = {k: v for k, v in params.items() if k in used} if isinstance(params, dict) else params
        self.duck_writes.append((name, statement.sql("duckdb"), kept))

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
