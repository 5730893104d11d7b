"""Customer 360 (docs/decisions.md, Customer 360): one profile per known customer, co-purchase recommendations, and
the serving copy that `loyalty-pipeline profile` reads while the warehouse is being written."""

from pathlib import Path

import dagster as dg

from loyalty_pipeline.defs.checks import PEOPLE, UPDATED, check_results, check_specs, failed_blocking
from loyalty_pipeline.defs.customer_checks import (
    CHECKED,
    PROFILE_CHECKS,
    PROFILE_KEY,
    RECOMMENDATIONS_CHECKS,
    RECOMMENDATIONS_KEY,
    SERVING_CHECKS,
    SERVING_KEY,
)
from loyalty_pipeline.defs.customers import customers
from loyalty_pipeline.defs.errors import WarehouseError
from loyalty_pipeline.defs.identity import id_graph
from loyalty_pipeline.defs.ingest import raw_topics
from loyalty_pipeline.defs.journey_checks import ACTIVATIONS_KEY
from loyalty_pipeline.defs.loyalty import enriched_purchases
from loyalty_pipeline.defs.loyalty_checks import CAFFEINE_KEY, PROMOTIONS_KEY, SALES_TOTALS_KEY
from loyalty_pipeline.defs.metadata import OWNERS, PORTABLE_KINDS, WAREHOUSE_POOL, preview, table_metadata
from loyalty_pipeline.defs.points import point_balances
from loyalty_pipeline.defs.resources import RulesResource, Warehouse
from loyalty_pipeline.domain.customer import identifiers, recommend
from loyalty_pipeline.domain.customer.profiles import PROFILE_360_VIEW, PROFILE_SOURCES, profile_sql, totals_from_start
from loyalty_pipeline.domain.journey import totals
from loyalty_pipeline.domain.loyalty.rules_sql import load_tiers
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.warehouse import count
from loyalty_pipeline.serve import publish

# The profile is as of the end of the last day materialized (the ledger records every day it was built for,
# events or not), the same instant as the point balances.
LAST_DAY = "SELECT max(day) FROM points.ledger_days"


PROFILE_SPEC = dg.AssetSpec(
    PROFILE_KEY,
    group_name="customer",
    owners=OWNERS,
    kinds=PORTABLE_KINDS,
    deps=[
        raw_topics["users"],
        raw_topics["user_activity"],
        customers,
        enriched_purchases,
        SALES_TOTALS_KEY,
        PROMOTIONS_KEY,
        point_balances,
        id_graph,
    ],
    description="One row per known person: identity, spend, tier, points, products bought, activity since the last "
    "purchase; and customer.identifiers, the person each known identifier finds.",
)


def _profile_360(conn, rules: RulesResource, rebuild: bool) -> dg.MaterializeResult:
    """Profiles of the people touched since the last update (whole when there is none, the SQL or tiers changed,
    or on a rebuild), and the identifiers they hold, each in one transaction with its mark."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS customer")
    identifiers.update(conn, rebuild)  # first: the profiles' update and checks then use their own touched_people
    as_of = conn.execute(LAST_DAY).fetchall()[0][0]
    load_tiers(conn, rules.rules)
    tiers = [[tier.model_dump() for tier in rules.rules.tiers], rules.rules.tier_policy.model_dump()]
    tiers.append(rules.rules.default_tier)
    update = touched.start(
        conn,
        "customer.profiles",
        PROFILE_SOURCES,
        touched.rules_hash(profile_sql(), profile_sql(PEOPLE), tiers),
        rebuild,
    )
    people = None if update.whole else PEOPLE
    kept = people is not None and totals.kept_totals_of(conn, as_of, people)
    if not kept:  # a rebuild, or no current copy: summed from the start
        totals_from_start(conn, as_of, people)
    conn.execute("CREATE TABLE IF NOT EXISTS customer.profile_as_of (as_of DATE)")
    touched.refresh(
        conn,
        "customer.profiles",
        profile_sql,
        {"as_of": as_of},
        update,
        also=[
            ("DELETE FROM customer.profile_as_of", {}),
            ("INSERT INTO customer.profile_as_of VALUES ($as_of)", {"as_of": as_of}),
        ],
    )
    conn.execute(PROFILE_360_VIEW)
    return dg.MaterializeResult(
        asset_key=PROFILE_KEY,
        metadata={
            **table_metadata(conn, "customer.profile_360"),
            "as_of": str(as_of),
            "update": "rebuilt whole" if update.whole else "incremental",
            "people_updated": count(conn, "SELECT 1 FROM customer.profiles" if update.whole else PEOPLE),
            "totals": "kept by the journeys" if kept else "summed from the start",
            "preview": preview(conn, "SELECT * FROM customer.profile_360 ORDER BY total_spend DESC, user_id"),
        },
        check_results=check_results(PROFILE_KEY, PROFILE_CHECKS, conn, rules, None if update.whole else UPDATED),
    )


RECOMMENDATIONS_SPEC = dg.AssetSpec(
    RECOMMENDATIONS_KEY,
    group_name="customer",
    owners=OWNERS,
    kinds=PORTABLE_KINDS,
    deps=[PROFILE_KEY, enriched_purchases],
    description="Top 5 products per customer, bought in other customers' orders together with what they looked at since their last purchase.",
    skippable=True,  # not built when the profile fails a blocking check
)


def _recommendations(conn, applied: recommend.Applied) -> dg.MaterializeResult:
    """The view over the state `applied` brought up to date, and its checks on a sample."""
    recommend.create_view(conn)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE rec_checked_people AS {CHECKED}")
    checked = recommend.recommendations_sql("SELECT person FROM rec_checked_people")
    conn.execute(f"CREATE OR REPLACE TEMP TABLE rec_checked AS {checked}")
    return dg.MaterializeResult(
        asset_key=RECOMMENDATIONS_KEY,
        metadata={
            "dagster/table_name": "customer.recommendations",
            "update": "rebuilt whole" if applied.whole else "incremental",
            "baskets_changed": applied.baskets_changed,
            "baskets": count(conn, "SELECT 1 FROM customer.rec_baskets"),
            "co_purchase_counts": count(conn, "SELECT 1 FROM customer.rec_counts"),
            "preview": preview(conn, "SELECT * FROM rec_checked ORDER BY user_id, rank", limit=20),
        },
        check_results=check_results(RECOMMENDATIONS_KEY, RECOMMENDATIONS_CHECKS, conn),
    )


SERVING_SPEC = dg.AssetSpec(
    SERVING_KEY,
    group_name="customer",
    owners=OWNERS,
    kinds={"duckdb", "sqlite"},
    deps=[PROFILE_KEY, RECOMMENDATIONS_KEY, point_balances, CAFFEINE_KEY, ACTIVATIONS_KEY],
    description="The serving store (a SQLite file beside the warehouse): one card per customer (what the 360 app "
    "shows) and the identifiers and names lookups find. Each publish replaces the rows of the people the change log "
    "holds, in one transaction (whole on a rebuild, new rules or a store that cannot be read): lookups never block "
    "on a run and never see half of one.",
    skippable=True,  # not published when a table it copies fails a blocking check
)


def _serving_snapshot(conn, target: Path, rules: RulesResource, rebuild: bool) -> dg.MaterializeResult:
    if target.is_dir():
        raise WarehouseError(f"{target} is a folder, where the serving copy goes: remove or rename it")
    done = publish.publish(conn, target, rules.rules, rebuild)
    return dg.MaterializeResult(
        asset_key=SERVING_KEY,
        metadata={**done, "path": str(target), "bytes": target.stat().st_size},
        check_results=check_results(SERVING_KEY, SERVING_CHECKS, conn, rules),
    )


@dg.multi_asset(
    name="customer_360",
    specs=[PROFILE_SPEC, RECOMMENDATIONS_SPEC, SERVING_SPEC],
    check_specs=check_specs(PROFILE_KEY, PROFILE_CHECKS)
    + check_specs(RECOMMENDATIONS_KEY, RECOMMENDATIONS_CHECKS)
    + check_specs(SERVING_KEY, SERVING_CHECKS),
    can_subset=True,
    pool=WAREHOUSE_POOL,
)
def customer_360(context: dg.AssetExecutionContext, warehouse: Warehouse, rules: RulesResource):
    """Profiles, then the state recommendations are computed from (on the chosen engine), then the serving copy (a
    SQLite file, read from DuckDB); a table failing a blocking check stops the step there (it fails after reporting
    it, as a blocking check does), so nothing wrong is served."""
    rebuild = context.run.tags.get(touched.REBUILD_TAG) == "true"
    with warehouse.get_connection() as conn:  # the 360 was a table before it was a view of customer.profiles
        if count(conn, "FROM duckdb_tables() WHERE schema_name = 'customer' AND table_name = 'profile_360'"):
            conn.execute("DROP TABLE customer.profile_360")
    applied = None
    with warehouse.get_connection(portable=True) as conn:
        if PROFILE_KEY in context.selected_asset_keys:
            result = _profile_360(conn, rules, rebuild)
            yield result
            if failed_blocking(result):
                return
        if RECOMMENDATIONS_KEY in context.selected_asset_keys:
            applied = recommend.update(conn, rebuild)
    with warehouse.get_connection() as conn:  # the view is DuckDB's on either engine
        if applied:
            result = _recommendations(conn, applied)
            yield result
            if failed_blocking(result):
                return
        if SERVING_KEY in context.selected_asset_keys:
            yield _serving_snapshot(conn, warehouse.serving_path(), rules, publish.rebuilding(context.run.tags))


customer_assets = [customer_360]
