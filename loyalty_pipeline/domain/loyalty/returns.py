"""Returns (docs/decisions.md, Returns), in SQL: which purchase each return message takes back, or why it is
quarantined.

A return names its purchase by `purchase_id`, or by `order_id` and `product_id`: then it takes the most recent
matching purchase not yet returned. A return is judged once, in the run of its day (its `returned_at`, default the
message's ts); what it takes back is in `loyalty.returns`, and `loyalty.enriched_purchases.returned_at` says when.
"""

from datetime import date

import duckdb

from loyalty_pipeline.domain.identity.identity import key_value, link_spans
from loyalty_pipeline.lib.sql import load
from loyalty_pipeline.lib.warehouse import in_span, row_json

_SQL = load(__file__)  # returns.sql
DDL = _SQL["ddl"]
ASKED = _SQL["asked"]


SOURCE = "loyalty:returns"

# Whom each strong identifier resolves to, over the days it does, for "a return of another customer's purchase".
_LINK_SPANS = link_spans()


# One turn judged: `reason` NULL for an accepted return. An order's return takes the most recent purchase of the
# product bought by the return's time and not yet returned.
JUDGE_TURN = f"""
INSERT INTO judged_returns
WITH done AS (
    SELECT purchase_id FROM loyalty.returns WHERE day < $first OR day >= $end
    UNION ALL SELECT matched_id FROM judged_returns WHERE reason IS NULL
), now AS (
    SELECT * FROM asked_returns WHERE turn = $turn
), by_order AS (  -- the most recent open purchase by the return's time, else the first one after it (too early)
    SELECT now.return_id, p.purchase_id AS matched_id
    FROM now JOIN loyalty.enriched_purchases AS p ON p.order_id = now.order_id AND p.product_id = now.product_id
    WHERE now.purchase_id IS NULL AND p.purchase_id NOT IN (SELECT purchase_id FROM done)
    QUALIFY row_number() OVER (
        PARTITION BY now.return_id
        ORDER BY p.purchased_at <= now.returned_at DESC,
                 CASE WHEN p.purchased_at <= now.returned_at THEN p.purchased_at END DESC,
                 CASE WHEN p.purchased_at <= now.returned_at THEN p.purchase_id END DESC,
                 p.purchased_at, p.purchase_id) = 1
), matched AS (
    SELECT now.* EXCLUDE (turn), coalesce(now.purchase_id, by_order.matched_id) AS matched_id
    FROM now LEFT JOIN by_order USING (return_id)
)
SELECT matched.* EXCLUDE (named_known), bought.user_id AS buyer, bought.purchased_at,
       CASE
           WHEN matched.purchase_id IS NOT NULL AND NOT named_known THEN 'unknown purchase ' || matched.purchase_id
           WHEN matched_id IS NULL AND NOT EXISTS (
               SELECT 1 FROM loyalty.enriched_purchases AS p
               WHERE p.order_id = matched.order_id AND p.product_id = matched.product_id)
           THEN 'unknown purchase: order ' || matched.order_id || ' product ' || matched.product_id
           WHEN matched_id IS NULL
           THEN 'already returned: every purchase of order ' || matched.order_id || ' product ' || matched.product_id
           WHEN matched_id IN (SELECT purchase_id FROM done) THEN 'already returned: ' || matched_id
           WHEN coalesce(returner.customer_id, matched.customer_key) <> coalesce(buyer.customer_id, bought.customer_key)
           THEN 'purchase ' || matched_id || ' is another customer''s'
           WHEN matched.returned_at < bought.purchased_at THEN 'return older than purchase ' || matched_id
           WHEN matched.returned_at > bought.purchased_at + $window_days * INTERVAL 1 DAY
           THEN 'return after the ' || $window_days || '-day window of purchase ' || matched_id
       END AS reason
FROM matched LEFT JOIN loyalty.enriched_purchases AS bought ON bought.purchase_id = matched.matched_id
LEFT JOIN ({_LINK_SPANS}) AS returner
     ON returner.id = {key_value("matched.customer_key")} AND {in_span("returner", "matched.day")}
LEFT JOIN ({_LINK_SPANS}) AS buyer ON buyer.id = bought.customer_key AND {in_span("buyer", "matched.day")}
"""


def _judge(conn: duckdb.DuckDBPyConnection, window: dict, window_days: int) -> None:
    """Fills `judged_returns`, one turn at a time: a few rounds (returns of one product of one order in a window)."""
    conn.execute(
        ASKED.format(kafka_json=row_json(conn, "raw.returns", "r"), s3_json=row_json(conn, "raw.s3_returns", "r")),
        window,
    )
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE judged_returns AS SELECT * EXCLUDE (turn, named_known), NULL::VARCHAR AS matched_id, "
        "NULL::VARCHAR AS buyer, NULL::TIMESTAMP AS purchased_at, NULL::VARCHAR AS reason FROM asked_returns LIMIT 0"
    )
    turns = conn.execute("SELECT coalesce(max(turn), 0) FROM asked_returns").fetchall()[0][0]
    for turn in range(1, turns + 1):
        conn.execute(JUDGE_TURN, {**window, "turn": turn, "window_days": window_days})


def judge_window(conn: duckdb.DuckDBPyConnection, first: date, end: date, window_days: int) -> None:
    """Judges the returns of days [first, end) and writes the accepted ones, with `returned_at` on their purchases,
    and the quarantined ones; the purchases of the window are already in loyalty.enriched_purchases (run it in the
    transaction that wrote them: all or nothing)."""
    window = {"first": first, "end": end}
    _judge(conn, window, window_days)
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
            """UPDATE loyalty.enriched_purchases AS p
                   SET returned_at = (SELECT max(r.returned_at) FROM judged_returns AS r
                                      WHERE r.reason IS NULL AND r.matched_id = p.purchase_id)
                   WHERE p.purchase_id IN (SELECT matched_id FROM judged_returns WHERE reason IS NULL)""",
            {},
        ),
    ):
        conn.execute(statement, params)
