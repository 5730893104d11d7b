"""Returns (issue 15), in SQL: which purchase each return message takes back, or why it is quarantined.

A return names its purchase by `purchase_id`, or by `order_id` and `product_id`: then it takes the most recent
matching purchase not yet returned. A return is judged once, in the run of its day (its `returned_at`, default the
message's ts); what it takes back is in `loyalty.returns`, and `loyalty.enriched_purchases.returned_at` says when.
"""

from datetime import date

import duckdb

DDL = """
CREATE SCHEMA IF NOT EXISTS loyalty;
CREATE TABLE IF NOT EXISTS loyalty.returns (  -- accepted returns: one per returned purchase
    return_id VARCHAR NOT NULL,    -- returns:<partition>:<offset> (Kafka) or s3:<key>:<row> (S3)
    purchase_id VARCHAR NOT NULL,
    user_id VARCHAR NOT NULL,      -- the buyer (enriched_purchases.user_id)
    returned_at TIMESTAMP NOT NULL,
    day DATE NOT NULL
);
"""

SOURCE = "loyalty:returns"

# The person a key resolves to on a day (identity.id_graph), for "a return of another customer's purchase".
_PERSON_ON_DAY = """coalesce((SELECT arg_max(g.customer_id, g.linked_on) FROM identity.id_graph AS g
                              WHERE g.strength = 'strong' AND g.id_value = {key} AND g.linked_on <= {day}), {key})"""

# The window's returns matched to purchases and judged: `reason` NULL for an accepted return.
JUDGE = f"""
CREATE OR REPLACE TEMP TABLE judged_returns AS
WITH asked AS (
    SELECT 'returns:' || kafka_partition || ':' || kafka_offset AS return_id, user_id AS customer_key,
           purchase_id, order_id, product_id, event_ts AS returned_at, day, location, to_json(r)::VARCHAR AS raw
    FROM raw.returns AS r WHERE NOT tombstone AND day >= $first AND day < $end
    UNION ALL  -- the S3 export names no customer: a return of another customer's purchase cannot be told there
    SELECT 's3:' || s3_key || ':' || row_no, NULL, purchase_id, order_id, product_id, returned_at, day, location,
           to_json(r)::VARCHAR
    FROM raw.s3_returns AS r WHERE day >= $first AND day < $end
), taken AS (  -- purchases returned before this window, or named by id in it
    SELECT purchase_id FROM loyalty.returns WHERE day < $first OR day >= $end
    UNION SELECT purchase_id FROM asked WHERE purchase_id IS NOT NULL
), by_order AS (  -- the k-th return of an order's product takes its k-th most recent purchase not yet returned
    SELECT *, row_number() OVER (PARTITION BY order_id, product_id ORDER BY returned_at, return_id) AS k
    FROM asked WHERE purchase_id IS NULL
), candidates AS (
    SELECT order_id, product_id, purchase_id,
           row_number() OVER (PARTITION BY order_id, product_id ORDER BY purchased_at DESC, purchase_id DESC) AS k
    FROM loyalty.enriched_purchases
    WHERE (order_id, product_id) IN (SELECT order_id, product_id FROM by_order)
      AND purchase_id NOT IN (SELECT purchase_id FROM taken)
), matched AS (
    SELECT *, purchase_id AS matched_id FROM asked WHERE purchase_id IS NOT NULL
    UNION ALL BY NAME
    SELECT by_order.* EXCLUDE (k), candidates.purchase_id AS matched_id
    FROM by_order LEFT JOIN candidates USING (order_id, product_id, k)
), checked AS (
    SELECT matched.*, bought.user_id AS buyer, bought.purchased_at,
           CASE
               WHEN matched.purchase_id IS NOT NULL AND bought.purchase_id IS NULL
               THEN 'unknown purchase ' || matched.purchase_id
               WHEN matched_id IS NULL AND NOT EXISTS (
                   SELECT 1 FROM loyalty.enriched_purchases AS p
                   WHERE p.order_id = matched.order_id AND p.product_id = matched.product_id)
               THEN 'unknown purchase: order ' || matched.order_id || ' product ' || matched.product_id
               WHEN matched_id IS NULL
               THEN 'already returned: every purchase of order ' || matched.order_id || ' product '
                    || matched.product_id
               WHEN matched_id IN (SELECT purchase_id FROM loyalty.returns WHERE day < $first OR day >= $end)
               THEN 'already returned: ' || matched_id
               WHEN {_PERSON_ON_DAY.format(key="matched.customer_key", day="matched.day")}
                    <> {_PERSON_ON_DAY.format(key="bought.customer_key", day="matched.day")}
               THEN 'purchase ' || matched_id || ' is another customer''s'
               WHEN matched.returned_at < bought.purchased_at THEN 'return older than purchase ' || matched_id
               WHEN matched.returned_at > bought.purchased_at + to_days($window_days)
               THEN 'return after the ' || $window_days || '-day window of purchase ' || matched_id
           END AS problem
    FROM matched LEFT JOIN loyalty.enriched_purchases AS bought ON bought.purchase_id = matched.matched_id
)
SELECT * EXCLUDE (problem),
       coalesce(problem, CASE WHEN row_number() OVER (PARTITION BY matched_id ORDER BY problem IS NULL DESC,
                                                      returned_at, return_id) > 1
                              THEN 'already returned: ' || matched_id END) AS reason
FROM checked
"""


def judge_window(conn: duckdb.DuckDBPyConnection, first: date, end: date, window_days: int) -> None:
    """Judges the returns of days [first, end) and writes the accepted ones, with `returned_at` on their purchases,
    and the quarantined ones; the purchases of the window are already in loyalty.enriched_purchases (run it in the
    transaction that wrote them: all or nothing)."""
    window = {"first": first, "end": end}
    conn.execute(JUDGE, {**window, "window_days": window_days})
    for statement, params in (
        (
            """UPDATE loyalty.enriched_purchases SET returned_at = NULL WHERE purchase_id IN (
                       SELECT purchase_id FROM loyalty.returns WHERE day >= $first AND day < $end)""",
            window,
        ),
        ("DELETE FROM loyalty.returns WHERE day >= $first AND day < $end", window),
        (f"DELETE FROM raw.rejected_records WHERE source = '{SOURCE}' AND day >= $first AND day < $end", window),
        (
            """INSERT INTO loyalty.returns SELECT return_id, matched_id, buyer, returned_at, day
                   FROM judged_returns WHERE reason IS NULL""",
            {},
        ),
        (
            f"""INSERT INTO raw.rejected_records
                    SELECT '{SOURCE}', location, reason, raw, day FROM judged_returns WHERE reason IS NOT NULL""",
            {},
        ),
        (
            """UPDATE loyalty.enriched_purchases AS p SET returned_at = r.returned_at
                   FROM (SELECT matched_id, returned_at FROM judged_returns WHERE reason IS NULL) AS r
                   WHERE p.purchase_id = r.matched_id""",
            {},
        ),
    ):
        conn.execute(statement, params)
