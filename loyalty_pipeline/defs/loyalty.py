"""The ksqlDB loyalty program as assets: product catalogue, purchases priced at event time, tiers, stamp cards,
promotions. Rule values from loyalty.yaml reach SQL as parameters or rows of temp tables, never as SQL text."""

import dagster as dg

from loyalty_pipeline.defs.automation.partitions import DECLARED, window_days
from loyalty_pipeline.defs.checks import PEOPLE, UPDATED, check_results, check_specs, table_of
from loyalty_pipeline.defs.exports import S3_RETURNS_DDL, historical_purchases, s3_returns
from loyalty_pipeline.defs.identity import id_graph
from loyalty_pipeline.defs.ingest import raw_topics
from loyalty_pipeline.defs.loyalty_checks import (
    ALL_PRODUCTS_CHECKS,
    ALL_PRODUCTS_KEY,
    CAFFEINE_CHECKS,
    CAFFEINE_KEY,
    ENRICHED_CHECKS,
    ENRICHED_KEY,
    LIFETIME_SELECTS,
    PROMOTIONS_CHECKS,
    PROMOTIONS_KEY,
    SALES_TOTALS_CHECKS,
    SALES_TOTALS_KEY,
    TIER_STATUS_KEY,
    TOUCHED_PURCHASES,
)
from loyalty_pipeline.defs.metadata import (
    OWNERS,
    PORTABLE_KINDS,
    WAREHOUSE_POOL,
    bar_table,
    partition_metadata,
    preview,
    table_metadata,
)
from loyalty_pipeline.defs.resources import RulesResource, Warehouse
from loyalty_pipeline.domain.identity import identity
from loyalty_pipeline.domain.identity.identity import PURCHASES_NOW, purchases_now
from loyalty_pipeline.domain.ingest.kafka import TOPICS, table_ddl
from loyalty_pipeline.domain.loyalty import loyalty, returns
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.warehouse import REJECTED_DDL, count, transaction


@dg.asset(
    key=ENRICHED_KEY,
    check_specs=check_specs(ENRICHED_KEY, ENRICHED_CHECKS),
    group_name="loyalty",
    owners=OWNERS,
    kinds=PORTABLE_KINDS,
    partitions_def=DECLARED,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
    deps=[
        raw_topics["purchases"],
        raw_topics["products"],
        raw_topics["returns"],
        historical_purchases,
        s3_returns,
        id_graph,
    ],
    description="Every purchase (Kafka and S3) with the product's price and category as of the purchase's event time, "
    "and when it was returned (returns of unknown, returned or others' purchases are quarantined).",
)
def enriched_purchases(
    context: dg.AssetExecutionContext, warehouse: Warehouse, rules: RulesResource
) -> dg.MaterializeResult:
    first, end = window_days(context)
    window = {"first": first, "end": end}
    with warehouse.get_connection(portable=True) as conn:
        conn.execute(
            loyalty.ENRICHED_DDL
            + identity.DDL
            + returns.DDL
            + REJECTED_DDL
            + table_ddl(TOPICS["returns"])
            + S3_RETURNS_DDL
        )
        logged = {**window, "touched_seq": touched.next_seq(conn)}
        with transaction(conn):
            conn.execute(touched.log_sql(loyalty.WINDOW_PEOPLE, "purchases"), logged)  # the rows and returns replaced
            conn.execute("DELETE FROM loyalty.enriched_purchases WHERE day >= $first AND day < $end", window)
            conn.execute(loyalty.ENRICH_WINDOW, window)
            returns.judge_window(conn, first, end, rules.rules.returns.window_days)
            conn.execute(touched.log_sql(loyalty.WINDOW_PEOPLE, "purchases"), logged)  # and their replacements
        window_rows = "SELECT * EXCLUDE (day) FROM loyalty.enriched_purchases WHERE day >= $first AND day < $end"
        return dg.MaterializeResult(
            metadata={
                **table_metadata(conn, "loyalty.enriched_purchases"),
                **partition_metadata(conn, "loyalty.enriched_purchases", "day", first, end),
                "unknown_product_rows": count(conn, window_rows + " AND price IS NULL", window),
                "preview": preview(conn, window_rows + " ORDER BY purchased_at", window),
            },
            check_results=check_results(ENRICHED_KEY, ENRICHED_CHECKS, conn, rules, (first, end)),
        )


def _replace_table(conn, table: str, select_sql: str, params: dict | None = None) -> None:
    """Rebuild a whole (small, derived) table in one transaction: readers see the old rows or the new."""
    schema = table.split(".")[0]
    with transaction(conn):
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(f"CREATE OR REPLACE TABLE {table} AS {select_sql}", params or {})


def _table_result(conn, key: dg.AssetKey, order_by: str, checks: list, rules=None, days=None) -> dg.MaterializeResult:
    table = table_of(key)
    return dg.MaterializeResult(
        asset_key=key,
        metadata={
            **table_metadata(conn, table),
            "preview": preview(conn, f"SELECT * FROM {table} ORDER BY {order_by}", limit=20),
        },
        check_results=check_results(key, checks, conn, rules, days),
    )


def _all_products(conn, rules: RulesResource, rebuild: bool, read: dict) -> dg.MaterializeResult:
    _replace_table(
        conn,
        "loyalty.all_products",
        """
        SELECT product_id, category, price FROM raw.products
        QUALIFY row_number() OVER (PARTITION BY product_id ORDER BY event_ts DESC, kafka_offset DESC, kafka_partition DESC) = 1
            AND NOT tombstone
        """,
    )
    return _table_result(conn, ALL_PRODUCTS_KEY, "product_id", ALL_PRODUCTS_CHECKS)


def _lifetime(conn, key: dg.AssetKey, rules: RulesResource, rebuild: bool, order_by: str, checks: list, read: dict):
    """Updates a lifetime table for the people touched since its last update (whole when it has none, when its
    SQL or rules changed, or on a rebuild), in one transaction; checks the people it updated. The tables of a step
    apply the same stretch of the change log: `read` remembers the stretch whose people and purchases are read."""
    select, params = LIFETIME_SELECTS[key]
    values = loyalty.load_rules(conn, rules.rules)
    table = table_of(key)
    every = f"({PURCHASES_NOW})"
    sql = touched.rules_hash(select(every), select(TOUCHED_PURCHASES), params(rules), values)
    update = touched.start(conn, table, loyalty.SOURCES, sql, rebuild, collect_people=False)
    if not update.whole and read.get("stretch") != (update.since, update.upto):
        touched.collect(conn, update, loyalty.SOURCES)
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {TOUCHED_PURCHASES} AS {purchases_now(PEOPLE)}")
        read["stretch"] = (update.since, update.upto)
    touched.refresh(conn, table, lambda people: select(TOUCHED_PURCHASES if people else every), params(rules), update)
    result = _table_result(conn, key, order_by, checks, rules, None if update.whole else UPDATED)
    result.metadata["update"] = "rebuilt whole" if update.whole else "incremental"
    result.metadata["people_updated"] = count(conn, f"SELECT 1 FROM {table}" if update.whole else PEOPLE)
    return result


def _sales_totals(conn, rules: RulesResource, rebuild: bool, read: dict) -> dg.MaterializeResult:
    result = _lifetime(conn, SALES_TOTALS_KEY, rules, rebuild, "total DESC, user_id", SALES_TOTALS_CHECKS, read)
    tiers = conn.execute(
        "SELECT reward_level, count(*) FROM loyalty.sales_totals GROUP BY reward_level ORDER BY 2 DESC, 1"
    ).fetchall()
    result.metadata["tier_distribution"] = dg.MetadataValue.md(bar_table(("tier", "customers"), tiers))
    return result


def _caffeine_index(conn, rules: RulesResource, rebuild: bool, read: dict) -> dg.MaterializeResult:
    return _lifetime(conn, CAFFEINE_KEY, rules, rebuild, "user_id", CAFFEINE_CHECKS, read)


def _promotions(conn, rules: RulesResource, rebuild: bool, read: dict) -> dg.MaterializeResult:
    return _lifetime(conn, PROMOTIONS_KEY, rules, rebuild, "promotion_name, user_id", PROMOTIONS_CHECKS, read)


def _spec(key: dg.AssetKey, deps: list, description: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key, deps=deps, description=description, group_name="loyalty", owners=OWNERS, kinds=PORTABLE_KINDS
    )


# The lifetime tables the loyalty program derives: small, independent of each other, one step on one connection.
LIFETIME_TABLES = {
    ALL_PRODUCTS_KEY: (
        _spec(
            ALL_PRODUCTS_KEY,
            [raw_topics["products"]],
            "The latest valid state of each product (greatest ts, then offset); a tombstone removes it.",
        ),
        _all_products,
        ALL_PRODUCTS_CHECKS,
    ),
    SALES_TOTALS_KEY: (
        _spec(
            SALES_TOTALS_KEY,
            [enriched_purchases, id_graph, TIER_STATUS_KEY],
            "Lifetime spend per customer with a purchase, and the tier they hold (loyalty.tier_status).",
        ),
        _sales_totals,
        SALES_TOTALS_CHECKS,
    ),
    CAFFEINE_KEY: (
        _spec(
            CAFFEINE_KEY,
            [enriched_purchases, id_graph],
            "Stamp card: purchases of the stamp product per customer; the next one is free at cycle - 1.",
        ),
        _caffeine_index,
        CAFFEINE_CHECKS,
    ),
    PROMOTIONS_KEY: (
        _spec(
            PROMOTIONS_KEY,
            [enriched_purchases, id_graph],
            "Customers eligible for each declarative promotion of loyalty.yaml, with the considered products bought.",
        ),
        _promotions,
        PROMOTIONS_CHECKS,
    ),
}


@dg.multi_asset(
    name="loyalty_tables",
    specs=[spec for spec, _, _ in LIFETIME_TABLES.values()],
    check_specs=[spec for key, (_, _, checks) in LIFETIME_TABLES.items() for spec in check_specs(key, checks)],
    can_subset=True,  # the UI may ask for one table
    pool=WAREHOUSE_POOL,
)
def loyalty_tables(context: dg.AssetExecutionContext, warehouse: Warehouse, rules: RulesResource):
    """The selected lifetime tables, one after the other: each its own transaction, metadata and checks."""
    rebuild = context.run.tags.get(touched.REBUILD_TAG) == "true"
    with warehouse.get_connection(portable=True) as conn:
        conn.execute(loyalty.ENRICHED_DDL + identity.DDL + returns.DDL)
        read = {}  # what the lifetime tables' updates share (_lifetime)
        for key, (_, build, _) in LIFETIME_TABLES.items():
            if key in context.selected_asset_keys:
                yield build(conn, rules, rebuild, read)


loyalty_assets = [enriched_purchases, loyalty_tables]
