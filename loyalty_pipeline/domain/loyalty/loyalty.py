"""The ksqlDB loyalty program in SQL: every purchase with its id, priced and resolved to its person at event time,
and the lifetime tables (sales totals and tiers, stamp cards, promotions) of any set of people. Rule values reach
SQL as parameters or rows of temp tables, never as SQL text."""

from loyalty_pipeline.domain.config import Rules
from loyalty_pipeline.domain.identity import identity
from loyalty_pipeline.domain.loyalty.rules_sql import load_tiers, with_tier
from loyalty_pipeline.lib.sql import load
from loyalty_pipeline.lib.warehouse import in_span, insert_rows, spans

_SQL = load(__file__)  # loyalty.sql
ENRICHED_DDL = _SQL["enriched_ddl"]
WINDOW_PEOPLE = _SQL["window_people"]

# An S3 purchase's id: its order, product and row within the order (a Kafka purchase's is its coordinate).
S3_PURCHASE_ID = "'s3:' || trim(order_id) || ':' || trim(product_id) || ':' || row_no"


# Every valid purchase, Kafka and S3, with its purchase_id and the day it belongs to.
PURCHASES = f"""
SELECT 'purchases:' || kafka_partition || ':' || kafka_offset AS purchase_id,
       coalesce(order_id, 'purchases:' || kafka_partition || ':' || kafka_offset) AS order_id,
       user_id, product_id, NULL::DECIMAL(18,2) AS own_price, event_ts AS purchased_at, 'kafka' AS source,
       store_id, day
FROM raw.purchases WHERE NOT tombstone
UNION ALL
SELECT {S3_PURCHASE_ID}, order_id,
       user_id, product_id, price, purchased_at, 's3', NULL, day
FROM raw.historical_purchases
"""

# Kafka purchases take the product's price and category as of their event time: the latest products message with
# ts <= the purchase's ts, the greatest offset winning at one instant (a tombstone there: no price). S3 rows keep
# their own price. `user_id` is the person the purchase's key resolves to on its day (identity.id_graph);
# `customer_key` the key. Both "as of" lookups are joins on spans (warehouse.spans), not ASOF JOINs, so the
# statement runs on Spark too.
ENRICH_WINDOW = f"""
INSERT INTO loyalty.enriched_purchases BY NAME
WITH purchases AS (
    SELECT * FROM ({PURCHASES}) WHERE day >= $first AND day < $end
), resolved AS ({identity.with_person("purchases", links_before="$end")}
), product_states AS (
    SELECT product_id AS id, event_ts AS t, category, price
    FROM raw.products
    WHERE day < $end AND product_id IN (SELECT product_id FROM purchases)
    QUALIFY row_number() OVER (PARTITION BY product_id, event_ts ORDER BY kafka_offset DESC, kafka_partition DESC) = 1
)
SELECT resolved.purchase_id, order_id, person AS user_id, resolved.product_id, state.category,
       coalesce(own_price, state.price) AS price, purchased_at, source, store_id, resolved.day,
       resolved.user_id AS customer_key, returned.returned_at
FROM resolved LEFT JOIN ({spans("SELECT * FROM product_states")}) AS state
     ON state.id = resolved.product_id AND {in_span("state", "resolved.purchased_at")}
LEFT JOIN loyalty.returns AS returned  -- returns of other days (the window's own are judged next)
     ON returned.purchase_id = resolved.purchase_id AND (returned.day < $first OR returned.day >= $end)
"""


# Each lifetime table's rows from `purchases` (a table, or a subquery in parentheses, of purchases_now's rows), one
# SQL for a rebuild and an update, and the rule values it reads (as parameters; the tiers and promotions as temp
# tables, see load_rules).
def sales_totals_sql(purchases: str) -> str:
    return with_tier(
        f"SELECT user_id, coalesce(sum(price), 0)::DECIMAL(18,2) AS total FROM {purchases} GROUP BY user_id"
    )


def caffeine_sql(purchases: str) -> str:
    return f"""
        SELECT user_id, count(*) AS total, count(*) % $cycle AS sequence, count(*) % $cycle = $cycle - 1 AS next_one_free
        FROM {purchases} WHERE product_id = $product GROUP BY user_id
        """


def promotions_sql(purchases: str) -> str:
    return f"""
        WITH considered AS (
            SELECT rule.name, purchase.user_id,
                   list_sort(list_distinct(list(purchase.product_id))) AS products,
                   coalesce(sum(purchase.price), 0) AS spend
            FROM {purchases} AS purchase
            JOIN promotion_products AS rule ON rule.role = 'considers' AND rule.product_id = purchase.product_id
            GROUP BY rule.name, purchase.user_id
        ), failing AS (  -- a required product not bought, or an excluded one bought
            SELECT DISTINCT considered.name, considered.user_id
            FROM considered JOIN promotion_products AS rule ON rule.name = considered.name
            WHERE (rule.role = 'requires' AND NOT list_contains(considered.products, rule.product_id))
               OR (rule.role = 'excludes' AND list_contains(considered.products, rule.product_id))
        )
        SELECT considered.user_id, considered.name AS promotion_name, considered.products
        FROM considered JOIN promotion_rules AS rule ON rule.name = considered.name
        LEFT JOIN failing ON failing.name = considered.name AND failing.user_id = considered.user_id
        WHERE failing.name IS NULL AND (rule.min_spend IS NULL OR considered.spend > rule.min_spend)
        """


def load_rules(conn, rules: Rules) -> list:
    """The rule temp tables the lifetime SQL reads; returns the rule values, which a change of rebuilds whole."""
    load_tiers(conn, rules)
    conn.execute("CREATE OR REPLACE TEMP TABLE promotion_rules (name VARCHAR, min_spend DECIMAL(18,2))")
    insert_rows(conn, "promotion_rules", [[rule.name, rule.min_spend] for rule in rules.promotions])
    conn.execute("CREATE OR REPLACE TEMP TABLE promotion_products (name VARCHAR, role VARCHAR, product_id VARCHAR)")
    insert_rows(
        conn,
        "promotion_products",
        [
            [rule.name, role, product]
            for rule in rules.promotions
            for role, products in (
                ("considers", rule.considers),
                ("requires", rule.require_all),
                ("excludes", rule.exclude),
            )
            for product in products
        ],
    )
    return [
        [tier.model_dump() for tier in rules.tiers],
        rules.tier_policy.model_dump(),
        rules.default_tier,
        [rule.model_dump() for rule in rules.promotions],
    ]


# What the lifetime tables read: purchases, returns, the id graph and tiers (not the ledger).
SOURCES = ["purchases", "identity", "tiers"]
