"""The loyalty program's asset keys and checks, and what each lifetime table selects (its rebuild check's rows)."""

import dagster as dg

from loyalty_pipeline.defs.checks import UPDATED, check, duplicate_check, in_days, is_updated, matches_rebuild
from loyalty_pipeline.defs.resources import RulesResource
from loyalty_pipeline.domain.config import LEGACY_TIER_POLICY
from loyalty_pipeline.domain.identity.identity import PURCHASES_NOW, purchases_now
from loyalty_pipeline.domain.loyalty import loyalty
from loyalty_pipeline.domain.loyalty.rules_sql import load_tiers
from loyalty_pipeline.lib.warehouse import count

ENRICHED_KEY = dg.AssetKey(["loyalty", "enriched_purchases"])


ALL_PRODUCTS_KEY = dg.AssetKey(["loyalty", "all_products"])


SALES_TOTALS_KEY = dg.AssetKey(["loyalty", "sales_totals"])


CAFFEINE_KEY = dg.AssetKey(["loyalty", "caffeine_index"])


PROMOTIONS_KEY = dg.AssetKey(["loyalty", "promotions"])


TIER_HISTORY_KEY = dg.AssetKey(["loyalty", "tier_history"])


TIER_STATUS_KEY = dg.AssetKey(["loyalty", "tier_status"])


@check("Every valid purchase (Kafka and S3) is enriched exactly once.")
def enriched_keeps_every_purchase(conn, rules, days) -> tuple[bool, dict]:
    where, params = in_days("day", days)
    missing = count(
        conn,
        f"SELECT purchase_id FROM ({loyalty.PURCHASES}) WHERE {where} "
        f"EXCEPT ALL SELECT purchase_id FROM loyalty.enriched_purchases WHERE {where}",
        params,
    )
    return missing == 0, {"purchases_not_enriched": missing}


@check("Purchases of a product with no price known at purchase time.", blocking=False)
def purchases_of_priced_products(conn, rules, days) -> tuple[bool, dict]:
    where, params = in_days("day", days)
    unpriced = count(conn, f"SELECT 1 FROM loyalty.enriched_purchases WHERE price IS NULL AND {where}", params)
    return unpriced == 0, {"unpriced_purchases": unpriced}


# Their purchases now (temp table): read once per update for the three tables and their checks (loyalty._lifetime).
TOUCHED_PURCHASES = "touched_purchases"


def updated_purchases(days) -> str:
    """What the lifetime tables count: after an update, the updated people's purchases; else everyone's."""
    return TOUCHED_PURCHASES if days == UPDATED else f"({PURCHASES_NOW})"


@check(
    "Each total is the sum of the customer's known prices and its tier is the one held (lifetime spend tiers: the "
    "one the total's thresholds give)."
)
def totals_and_tiers_agree(conn, rules, days) -> tuple[bool, dict]:
    # lifetime spend tiers are recomputed from the rule rows by ranking, not read from the tier tables, so a broken
    # rule fails this check; other policies' tiers are checked against their history by tier_tables' checks
    load_tiers(conn, rules.rules)
    by_threshold = rules.rules.tier_policy == LEGACY_TIER_POLICY
    wrong = count(
        conn,
        f"""
        WITH expected AS (
            SELECT user_id, coalesce(sum(price), 0) AS total FROM {updated_purchases(days)} GROUP BY user_id
        ), tiered AS (
            SELECT expected.user_id, expected.total,
                   CASE WHEN $by_threshold THEN coalesce(tier.name, (SELECT name FROM tier_levels WHERE rank = 0))
                        ELSE coalesce((SELECT s.tier FROM loyalty.tier_status AS s WHERE s.user_id = expected.user_id),
                                      (SELECT name FROM tier_levels WHERE rank = 0)) END AS reward_level
            FROM expected LEFT JOIN tier_levels AS tier ON expected.total > tier.above AND tier.rank > 0
            QUALIFY row_number() OVER (PARTITION BY expected.user_id ORDER BY tier.above DESC NULLS LAST) = 1
        )
        SELECT 1 FROM tiered
        FULL JOIN (SELECT * FROM loyalty.sales_totals WHERE {is_updated("user_id", days)}) AS actual USING (user_id)
        WHERE tiered.total IS DISTINCT FROM actual.total OR tiered.reward_level IS DISTINCT FROM actual.reward_level
        """,
        {"by_threshold": by_threshold},
    )
    return wrong == 0, {"customers_wrong": wrong}


@check("Stamp counts match the stamp product's purchases.")
def stamps_match_purchases(conn, rules, days) -> tuple[bool, dict]:
    wrong = count(
        conn,
        f"""
        SELECT 1 FROM (SELECT user_id, count(*) AS total FROM {updated_purchases(days)}
                              WHERE product_id = $product GROUP BY user_id) AS expected
        FULL JOIN (SELECT * FROM loyalty.caffeine_index WHERE {is_updated("user_id", days)}) AS actual USING (user_id)
        WHERE expected.total IS DISTINCT FROM actual.total
        """,
        {"product": rules.rules.stamp_card.product_id},
    )
    return wrong == 0, {"customers_wrong": wrong}


ENRICHED_CHECKS = [
    enriched_keeps_every_purchase,
    purchases_of_priced_products,
    duplicate_check(ENRICHED_KEY, ["purchase_id"], day_column="day"),
]


ALL_PRODUCTS_CHECKS = [duplicate_check(ALL_PRODUCTS_KEY, ["product_id"])]


def _stamp_params(rules: RulesResource) -> dict:
    return {"cycle": rules.rules.stamp_card.cycle, "product": rules.rules.stamp_card.product_id}


LIFETIME_SELECTS = {
    SALES_TOTALS_KEY: (loyalty.sales_totals_sql, lambda rules: {}),
    CAFFEINE_KEY: (loyalty.caffeine_sql, _stamp_params),
    PROMOTIONS_KEY: (loyalty.promotions_sql, lambda rules: {}),
}


def lifetime_rows(key: dg.AssetKey):
    """(rows(people), params(rules)): a lifetime table's rows of `people` (a query of `person`; None: everyone)."""
    select, params = LIFETIME_SELECTS[key]
    return lambda people: select(f"({purchases_now(people or '')})"), params


# the sample's stretch also takes the people of purchases in it (a row may be missing)
BUYERS = "loyalty.enriched_purchases"


SALES_TOTALS_CHECKS = [
    totals_and_tiers_agree,
    duplicate_check(SALES_TOTALS_KEY, ["user_id"]),
    matches_rebuild(SALES_TOTALS_KEY, BUYERS, *lifetime_rows(SALES_TOTALS_KEY)),
]


CAFFEINE_CHECKS = [
    stamps_match_purchases,
    duplicate_check(CAFFEINE_KEY, ["user_id"]),
    matches_rebuild(CAFFEINE_KEY, BUYERS, *lifetime_rows(CAFFEINE_KEY)),
]


PROMOTIONS_CHECKS = [
    duplicate_check(PROMOTIONS_KEY, ["user_id", "promotion_name"]),
    matches_rebuild(PROMOTIONS_KEY, BUYERS, *lifetime_rows(PROMOTIONS_KEY)),
]
