"""Point balances from the ledger (`points.point_balances`), in SQL: what is left of each lot, what is usable,
pending or owed, and whom a ledger day changed a balance of."""

from loyalty_pipeline.domain.points.fold import is_debt
from loyalty_pipeline.lib.sql import load

_SQL = load(__file__)  # balances.sql
LEDGER_DAY_PEOPLE = _SQL["ledger_day_people"]

# The midnight that ends the last ledger day.
HORIZON = "SELECT (max(day) + 1)::TIMESTAMP FROM points.ledger_days"


def open_lots(people: str = "") -> str:
    """What is left of each lot at the end of the last ledger day (lots expiring at that midnight are still open);
    with `people` (a query of one column, constant SQL), of their lots only."""
    mine = f"AND user_id IN ({people})" if people else ""
    return f"""
SELECT lot.user_id, lot.txn_id, lot.expires_at, coalesce(lot.available_at, lot.occurred_at) AS available_at,
       lot.points - coalesce(taken.points, 0) AS remaining
FROM (SELECT * FROM points.point_transactions WHERE true {mine}) AS lot LEFT JOIN (
    SELECT lot_txn_id, sum(points) AS points FROM points.lot_allocations
    WHERE lot_expires_at >= ({HORIZON})
      {f"AND lot_txn_id IN (SELECT txn_id FROM points.point_transactions WHERE true {mine})" if people else ""}
    GROUP BY lot_txn_id
) AS taken ON taken.lot_txn_id = lot.txn_id
WHERE lot.kind IN ('earn', 'merge') AND lot.points > 0 AND lot.expires_at >= ({HORIZON})
  AND lot.points > coalesce(taken.points, 0)
"""


def balances_sql(people: str = "") -> str:
    """Points of open lots usable by the end of the last day (available; a lot usable from the midnight that ends it
    is still pending, as a lot expiring then is still open), the others (pending), and clawbacks not yet paid (debt);
    with `people` (a query of one column, constant SQL), their rows only: one SQL for a rebuild and an update."""
    mine = f"AND user_id IN ({people})" if people else ""
    transactions = f"(SELECT * FROM points.point_transactions WHERE true {mine})"
    return f"""
WITH lots AS (
    SELECT user_id, sum(remaining) FILTER (available_at < ({HORIZON})) AS available,
           sum(remaining) FILTER (available_at >= ({HORIZON})) AS pending
    FROM ({open_lots(people)}) GROUP BY user_id
), debts AS (
    SELECT debt.user_id, sum(-debt.points - coalesce(paid.points, 0)) AS debt
    FROM {transactions} AS debt
    LEFT JOIN (SELECT txn_id, sum(points) AS points FROM points.lot_allocations
               {f"WHERE txn_id IN (SELECT txn_id FROM {transactions})" if people else ""}
               GROUP BY txn_id) AS paid
           ON paid.txn_id = debt.txn_id
    WHERE {is_debt("debt")} GROUP BY debt.user_id
), next_expiry AS (
    SELECT user_id, expires_at AS next_expiry_at, sum(remaining) AS next_expiry_points
    FROM ({open_lots(people)}) GROUP BY user_id, expires_at
    QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY expires_at) = 1
)
SELECT user_id, sum(points)::BIGINT AS balance, any_value(next_expiry_at) AS next_expiry_at,
       any_value(next_expiry_points)::BIGINT AS next_expiry_points,
       coalesce(any_value(available), 0)::BIGINT AS available, coalesce(any_value(pending), 0)::BIGINT AS pending,
       coalesce(any_value(debt), 0)::BIGINT AS debt
FROM {transactions} AS txn LEFT JOIN next_expiry USING (user_id) LEFT JOIN lots USING (user_id)
LEFT JOIN debts USING (user_id)
WHERE user_id NOT IN (SELECT merged_id FROM identity.merges)  -- a merged profile's points moved with it
GROUP BY user_id
"""


# What the ledger consumers read: the ledger, and the merges of the id graph.
SOURCES = ["ledger", "identity"]
