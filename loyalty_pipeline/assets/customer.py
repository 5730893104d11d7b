"""Customer 360 (SPEC §5.3): one profile per known customer, co-purchase recommendations, and the serving copy
that `loyalty-pipeline profile` reads while the warehouse is being written."""

import os

import dagster as dg

from loyalty_pipeline import recommend
from loyalty_pipeline.assets.checks import count_rows, duplicate_check
from loyalty_pipeline.assets.ingest import customers, raw_topics
from loyalty_pipeline.assets.loyalty import _load_tiers, enriched_purchases, promotions, sales_totals
from loyalty_pipeline.assets.points import point_balances
from loyalty_pipeline.profiles import FROM_START, PROFILE_360
from loyalty_pipeline.resources import RulesResource, Warehouse
from loyalty_pipeline.warehouse import OWNERS, WAREHOUSE_POOL, count, preview, table_metadata, transaction

SERVED_TABLES = ["customer.profile_360", "customer.recommendations"]

# The profile is as of the end of the last day materialized (the ledger records every day it was built for,
# events or not), the same instant as the point balances.
LAST_DAY = "SELECT max(day) FROM points.ledger_days"


@dg.asset(
    key=["customer", "profile_360"],
    group_name="customer",
    owners=OWNERS,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    deps=[
        raw_topics["users"],
        raw_topics["user_activity"],
        customers,
        enriched_purchases,
        sales_totals,
        promotions,
        point_balances,
    ],
    description="One row per known customer: identity, spend, tier, points, products bought, activity since the last purchase.",
)
def profile_360(warehouse: Warehouse, rules: RulesResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as conn:
        as_of = conn.execute(LAST_DAY).fetchall()[0][0]
        _load_tiers(conn, rules)
        conn.execute(FROM_START, {"as_of": as_of})
        with transaction(conn):
            conn.execute("CREATE SCHEMA IF NOT EXISTS customer")
            conn.execute(
                f"CREATE OR REPLACE TABLE customer.profile_360 AS {PROFILE_360}",
                {"as_of": as_of, "default_tier": rules.rules.default_tier},
            )
        return dg.MaterializeResult(
            metadata={
                **table_metadata(conn, "customer.profile_360"),
                "as_of": str(as_of),
                "preview": preview(conn, "SELECT * FROM customer.profile_360 ORDER BY total_spend DESC, user_id"),
            }
        )


@dg.asset(
    key=["customer", "recommendations"],
    group_name="customer",
    owners=OWNERS,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    deps=[profile_360, enriched_purchases],
    description="Top 5 products per customer, bought in other customers' orders together with what they looked at since their last purchase.",
)
def recommendations(warehouse: Warehouse) -> dg.MaterializeResult:
    with warehouse.get_connection() as conn:
        with transaction(conn):
            recommend.build(conn, "customer.recommendations")
        return dg.MaterializeResult(
            metadata={
                **table_metadata(conn, "customer.recommendations"),
                "customers_with_recommendations": count(conn, "SELECT DISTINCT user_id FROM customer.recommendations"),
                "preview": preview(conn, "SELECT * FROM customer.recommendations ORDER BY user_id, rank", limit=20),
            }
        )


@dg.asset(
    key=["customer", "serving_snapshot"],
    group_name="customer",
    owners=OWNERS,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    deps=[profile_360, recommendations],
    description="A read-only copy of the 360 tables, swapped in by an atomic rename: lookups never block on a run "
    "and never see half of one.",
)
def serving_snapshot(warehouse: Warehouse) -> dg.MaterializeResult:
    target = warehouse.serving_path()
    staging = target.with_name(target.name + ".next")
    staging.unlink(missing_ok=True)
    with warehouse.get_connection() as conn:
        conn.execute("ATTACH $path AS serving", {"path": str(staging)})
        try:
            conn.execute("CREATE SCHEMA serving.customer")
            for table in SERVED_TABLES:
                conn.execute(f"CREATE TABLE serving.{table} AS SELECT * FROM {table}")
        finally:
            conn.execute("DETACH serving")
    os.replace(staging, target)  # atomic: a reader holds the old file or opens the new one
    return dg.MaterializeResult(metadata={"path": str(target), "bytes": target.stat().st_size})


@dg.asset_check(
    pool=WAREHOUSE_POOL,
    asset=profile_360,
    blocking=True,
    description="Spend, tier and points agree with loyalty.sales_totals and the point ledger; every buyer has a profile.",
)
def profiles_agree_with_totals_and_ledger(warehouse: Warehouse) -> dg.AssetCheckResult:
    wrong = count_rows(
        warehouse,
        """SELECT 1 FROM customer.profile_360 AS p
           FULL JOIN loyalty.sales_totals AS s USING (user_id)
           LEFT JOIN points.point_balances AS b USING (user_id)
           WHERE p.user_id IS NULL
              OR (s.user_id IS NOT NULL AND (p.total_spend <> s.total OR p.reward_level <> s.reward_level))
              OR p.points_balance <> coalesce(b.balance, 0)""",
    )
    return dg.AssetCheckResult(passed=wrong == 0, metadata={"customers_wrong": wrong})


@dg.asset_check(
    pool=WAREHOUSE_POOL,
    asset=recommendations,
    blocking=True,
    description="At most 5 per customer, ranked 1..n, never a product of interest.",
)
def recommendations_are_well_formed(warehouse: Warehouse) -> dg.AssetCheckResult:
    wrong = count_rows(
        warehouse,
        """SELECT 1 FROM customer.recommendations AS r JOIN customer.profile_360 AS p USING (user_id)
           WHERE r.rank NOT BETWEEN 1 AND 5 OR list_contains(p.activity_since_last_purchase, r.product_id)""",
    )
    return dg.AssetCheckResult(passed=wrong == 0, metadata={"bad_rows": wrong})


@dg.asset_check(
    pool=WAREHOUSE_POOL,
    asset=serving_snapshot,
    blocking=True,
    description="The serving copy holds the warehouse's 360 tables: same row count and row-hash sum per table.",
)
def serving_copy_is_complete(warehouse: Warehouse) -> dg.AssetCheckResult:
    fingerprint = "SELECT count(*), sum(hash(t)) FROM {} AS t"
    with warehouse.get_connection() as conn:
        conn.execute("ATTACH $path AS serving (READ_ONLY)", {"path": str(warehouse.serving_path())})
        try:
            differing = [
                table
                for table in SERVED_TABLES
                if conn.execute(fingerprint.format(table)).fetchall()
                != conn.execute(fingerprint.format(f"serving.{table}")).fetchall()
            ]
        finally:
            conn.execute("DETACH serving")
    return dg.AssetCheckResult(passed=not differing, metadata={"tables_differing": ", ".join(differing) or "none"})


customer_assets = [profile_360, recommendations, serving_snapshot]
customer_checks = [
    profiles_agree_with_totals_and_ledger,
    recommendations_are_well_formed,
    serving_copy_is_complete,
    duplicate_check(profile_360.key, ["user_id"]),
    duplicate_check(recommendations.key, ["user_id", "rank"]),
    duplicate_check(recommendations.key, ["user_id", "product_id"]),
]
