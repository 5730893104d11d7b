"""What the serving store holds, read from the warehouse in DuckDB SQL: one card per profile (everything a service
desk sees, as one JSON document), the identifiers and names lookups find, and the state recommendations are
computed from. A publish (publish.py) writes these rows into SQLite."""

import duckdb

from loyalty_pipeline.domain.customer import recommend
from loyalty_pipeline.domain.identity import identity
from loyalty_pipeline.domain.journey import journeys
from loyalty_pipeline.domain.loyalty import tiers
from loyalty_pipeline.domain.points import ledger
from loyalty_pipeline.serve.serving import (
    LEDGER_ROWS,
    RECENT_EVENTS,
)


def of_people(people: str | None, column: str) -> str:
    """A condition keeping the rows of `people` (a query of one column `person`; None: everyone)."""
    return "true" if people is None else f"{column} IN (SELECT person FROM ({people}))"


def cards_sql(people: str | None = None) -> str:
    """One card per profile of `people` (a query of one column `person`, constant SQL; None: everyone): everything a
    service desk sees, as one JSON document, and the columns search shows. The calendar values (copy.published_at,
    copy.as_of, profile.days_since_last_purchase, profile.as_of) are left null: a lookup fills them in from the
    store's `info`. Reads the warehouse, with `tier_levels` (`prepare`), `$stamp_product` and `$cycle`."""
    ids = "SELECT id_value, customer_id AS user_id FROM identity.current_ids"
    linked = "SELECT NULL::VARCHAR AS id_value WHERE false"
    if people is not None:  # the ids whose events may be theirs: their own, and every value ever linked to them
        linked = f"""SELECT person AS id_value FROM ({people})
                     UNION SELECT id_value FROM identity.id_graph WHERE {of_people(people, "customer_id")}"""
        ids = """SELECT id_value, arg_max(customer_id, linked_on) AS user_id FROM identity.id_graph
                 WHERE strength = 'strong' AND id_value IN (SELECT id_value FROM linked) GROUP BY id_value"""

    def mine(column: str) -> str:
        return "true" if people is None else f"{column} IN (SELECT id_value FROM linked)"

    return f"""
WITH linked AS ({linked}), ids AS ({ids}),
ledger AS (
    SELECT user_id, list({{'occurred_at': occurred_at, 'points': points, 'kind': kind, 'expires_at': expires_at}}
                         ORDER BY occurred_at DESC, txn_id DESC)[:{LEDGER_ROWS}] AS rows
    FROM points.point_transactions WHERE {of_people(people, "user_id")} GROUP BY user_id
), journeys AS (
    SELECT customer_id AS user_id,
           list({{'journey_id': journey_id, 'node': node, 'entered_at': entered_at}} ORDER BY journey_id) AS nodes
    FROM (SELECT journey_id, customer_id, arg_max(node, (entry, entered_at, CASE WHEN node = 'end' THEN 4
                 WHEN node = 'goal' THEN 3 WHEN node LIKE '%:exit:%' OR node LIKE '%:no_branch' THEN 2
                 WHEN node LIKE '%:step:%' THEN 1 ELSE 0 END, node)) AS node,
                 max(entered_at) AS entered_at
          FROM journey.journey_state WHERE {of_people(people, "customer_id")} GROUP BY ALL)
    GROUP BY customer_id
), activations AS (
    SELECT customer_id AS user_id,
           list({{'journey_id': journey_id, 'activation': activation, 'activated_on': activated_on}}
                ORDER BY activated_on DESC, journey_id, activation) AS rows
    FROM journey.activations WHERE {of_people(people, "customer_id")} GROUP BY customer_id
), events AS (
    SELECT coalesce(ids.user_id, p.user_id) AS user_id, p.purchased_at AS happened_at,
           CASE WHEN p.returned_at IS NULL THEN 'purchase' ELSE 'purchase (returned)' END AS what, p.product_id, p.price,
           p.purchase_id AS event_id
    FROM loyalty.enriched_purchases AS p LEFT JOIN ids ON ids.id_value = p.user_id WHERE {mine("p.user_id")}
    UNION ALL
    SELECT coalesce(ids.user_id, a.user_id), a.event_ts, a.event_type, a.product_id, NULL,
           a.kafka_partition || ':' || a.kafka_offset
    FROM raw.user_activity AS a LEFT JOIN ids ON ids.id_value = a.user_id
    WHERE NOT a.tombstone AND {mine("a.user_id")}
), recent AS (  -- ties at one instant in a fixed order (the event's id), so every build writes the same card
    SELECT user_id, list({{'at': happened_at, 'what': what, 'product_id': product_id, 'price': price}}
                         ORDER BY happened_at DESC, what, product_id, event_id) AS rows
    FROM (SELECT * FROM events QUALIFY row_number() OVER (PARTITION BY user_id
                                                          ORDER BY happened_at DESC, what, product_id, event_id)
                                       <= {RECENT_EVENTS})
    GROUP BY user_id
), profile AS (
    SELECT * REPLACE (NULL AS days_since_last_purchase, NULL AS as_of) FROM customer.profile_360
    WHERE {of_people(people, "user_id")}
)
SELECT profile.user_id, profile.name, profile.email, profile.reward_level,
       profile.last_purchase_at::DATE::VARCHAR AS last_purchase_on,
       json_object(
    'copy', json_object('published_at', NULL, 'as_of', NULL),
    'user_id', profile.user_id, 'name', profile.name, 'email', profile.email,
    'tier', json_object(
        'level', profile.reward_level, 'total_spend', profile.total_spend,
        'next', CASE WHEN status.next_tier IS NOT NULL THEN json_object(
                    'name', status.next_tier, 'above', next_level.above, 'to_go', next_level.above - status.period_value)
                END),
    'tier_period', json_object(  -- a tier kept by periods: its next evaluation and what keeping it takes
        'expires_at', status.tier_expires_at, 'period_value', status.period_value, 'to_keep', status.to_keep_tier),
    'stamps', json_object(
        'product_id', $stamp_product, 'cycle', $cycle, 'bought', coalesce(stamps.total, 0),
        'in_cycle', coalesce(stamps.sequence, 0), 'next_one_free', coalesce(stamps.next_one_free, false),
        'to_free', CASE WHEN stamps.next_one_free THEN 0 ELSE $cycle - 1 - coalesce(stamps.sequence, 0) END),
    'points', json_object(
        'balance', coalesce(balance.balance, 0), 'available', coalesce(balance.available, 0),
        'pending', coalesce(balance.pending, 0), 'debt', coalesce(balance.debt, 0),
        'next_expiry_at', balance.next_expiry_at, 'next_expiry_points', balance.next_expiry_points),
    'ledger', coalesce(ledger.rows, []),
    'journeys', coalesce(journeys.nodes, []),
    'activations', coalesce(activations.rows, []),
    'recommendations', []::VARCHAR[],  -- computed when read (serving.RECOMMENDED)
    'recent_activity', coalesce(recent.rows, []),
    'profile', to_json(profile)
)::VARCHAR AS card
FROM profile
LEFT JOIN (SELECT * FROM loyalty.caffeine_index WHERE {of_people(people, "user_id")}) AS stamps USING (user_id)
LEFT JOIN (SELECT * FROM points.point_balances WHERE {of_people(people, "user_id")}) AS balance USING (user_id)
LEFT JOIN (SELECT * FROM loyalty.tier_status WHERE {of_people(people, "user_id")}) AS status USING (user_id)
LEFT JOIN tier_levels AS next_level ON next_level.name = status.next_tier
LEFT JOIN ledger USING (user_id)
LEFT JOIN journeys USING (user_id)
LEFT JOIN activations USING (user_id)
LEFT JOIN recent USING (user_id)
"""


def names_sql(people: str | None = None) -> str:
    """Every profile's name and email as a lookup finds them: trimmed, lower-case, without accents (serving.folded)."""
    return f"""
SELECT strip_accents(lower(trim(name))) AS value, user_id FROM customer.profile_360 WHERE name IS NOT NULL AND {of_people(people, "user_id")}
UNION
SELECT strip_accents(lower(trim(email))), user_id FROM customer.profile_360 WHERE email IS NOT NULL AND {of_people(people, "user_id")}
"""


# The identifier values whose person may have changed: every value ever linked to one of `people`, and every value
# that found one of them.
def values_sql(people: str) -> str:
    return f"""SELECT id_value FROM identity.id_graph WHERE {of_people(people, "customer_id")}
               UNION SELECT id_value FROM customer.identifiers WHERE {of_people(people, "user_id")}"""


IDENTIFIERS = "SELECT id_type, id_value, user_id FROM customer.identifiers"


# What the store computes recommendations from (serving.RECOMMENDED): the counts of `itemsets` (a query of one
# column `itemset`; None: all) keyed as the store keys them, and the baskets and large orders' products of `people`.
ITEMSET_KEY = "array_to_string(list_transform(itemset, lambda x: hex(x)), ',')"


def counts_sql(itemsets: str | None = None) -> str:
    mine = "" if itemsets is None else f"WHERE itemset IN ({itemsets})"
    return f"SELECT {ITEMSET_KEY} AS itemset, product_id, orders FROM customer.rec_counts {mine}"


def baskets_sql(people: str | None = None) -> str:
    return f"""SELECT user_id, order_id, to_json(items)::VARCHAR AS items FROM customer.rec_baskets
               WHERE {of_people(people, "user_id")}"""


def large_items_sql(people: str | None = None) -> str:
    return f"""SELECT DISTINCT unnest(items) AS product_id, order_id, user_id FROM customer.rec_large_baskets
               WHERE {of_people(people, "user_id")}"""


AS_OF = "SELECT max(as_of)::VARCHAR FROM customer.profile_360"


def prepare(conn: duckdb.DuckDBPyConnection, rules) -> dict:
    """The tables a card reads that a partial run may not have made, and `tier_levels`; returns the SQL parameters."""
    for statement in duckdb.extract_statements(ledger.DDL + journeys.DDL + identity.DDL + recommend.DDL + tiers.DDL):
        if statement.type == duckdb.StatementType.CREATE:  # not the ALTERs of the steps': on the Spark engine their
            conn.execute(statement.query)  # tables are views of the lake
    tiers.load_levels(conn, rules)
    return {"stamp_product": rules.stamp_card.product_id, "cycle": rules.stamp_card.cycle}
