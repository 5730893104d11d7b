"""Check factories for the rules every table shares (uniqueness, quarantine); domain checks live by their assets."""

import dagster as dg

from loyalty_pipeline.resources import Warehouse
from loyalty_pipeline.warehouse import WAREHOUSE_POOL


def table_of(key: dg.AssetKey) -> str:
    """The warehouse table an asset writes: asset key ["raw", "users"] is table raw.users."""
    return ".".join(key.path)


def count_rows(warehouse: Warehouse, sql: str, params: dict | None = None) -> int:
    """How many rows a check's query returns (the rows breaking its rule)."""
    with warehouse.get_connection() as conn:
        return conn.execute(f"SELECT count(*) FROM ({sql})", params or {}).fetchall()[0][0]


def duplicate_check(key: dg.AssetKey, columns: list[str]) -> dg.AssetChecksDefinition:
    """Blocking: no two rows share `columns`."""
    columns_sql = ", ".join(columns)

    @dg.asset_check(
        pool=WAREHOUSE_POOL,
        asset=key,
        name=f"unique_{'_'.join(columns)}",
        blocking=True,
        description=f"No two rows share ({columns_sql}).",
    )
    def _check(warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.get_connection() as conn:
            duplicated = conn.execute(
                f"SELECT count(*) FROM (SELECT {columns_sql} FROM {table_of(key)} GROUP BY ALL HAVING count(*) > 1)"
            ).fetchall()[0][0]
        return dg.AssetCheckResult(passed=duplicated == 0, metadata={"duplicated_keys": duplicated})

    return _check


def rejected_rows_check(key: dg.AssetKey, source: str) -> dg.AssetChecksDefinition:
    """Warns (never blocks) when input rows of `source` were quarantined, with counts per reason."""

    @dg.asset_check(
        pool=WAREHOUSE_POOL,
        asset=key,
        name="no_rejected_rows",
        description=f"Rows of {source} quarantined in raw.rejected_records (warning only: the good rows still load).",
    )
    def _check(warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.get_connection() as conn:
            reasons = conn.execute(
                "SELECT reason, count(*) FROM raw.rejected_records WHERE source = $1 GROUP BY ALL ORDER BY 2 DESC, 1",
                [source],
            ).fetchall()
        total = sum(rows for _, rows in reasons)
        return dg.AssetCheckResult(
            passed=total == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"rejected_rows": total, **{reason: rows for reason, rows in reasons[:10]}},
        )

    return _check
