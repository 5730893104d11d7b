"""The fold of a ledger day (ledger.py): each customer's events of the day in order over their open lots and unpaid
clawbacks, all customers' n-th events in one step of a recursive CTE. Its result, `day_steps`, is what each event
took from which lot; ledger.py turns it into rows."""

from loyalty_pipeline.lib.sql import load

_SQL = load(__file__)  # fold.sql
DAY_ACTIVE = _SQL["day_active"]
DAY_TIMELINE = _SQL["day_timeline"]
DAY_QUEUE = _SQL["day_queue"]
DAY_LIST_FOLDED = _SQL["day_list_folded"]
DAY_RUN = _SQL["day_run"]
DAY_FOLD_PIECES = _SQL["day_fold_pieces"]
DAY_START = _SQL["day_start"]
DAY_STEPS = _SQL["day_steps"]


def is_debt(row: str) -> str:
    """Ledger rows (alias `row`) that owe points until lots pay them (their lot_allocations): clawbacks, and the
    debts a merge moved in."""
    return f"{row}.points < 0 AND ({row}.kind = 'clawback' OR starts_with({row}.txn_id, 'merge:'))"


# What a clawback of a lot names, through any merges that moved it: the purchase of an earn
# (merge:merge:earn:<purchase_id>), an award's own lot key (bonus:<campaign>:<purchase_id>).
PURCHASE_OF_LOT = "regexp_extract({lot}, '^(?:merge:)*(?:earn:)?(.*)$', 1)"


DAY_OPEN_LOTS = f"""
CREATE OR REPLACE TEMP TABLE day_open_lots AS
WITH taken AS (
    SELECT lot_txn_id, sum(points) AS points FROM points.lot_allocations
    WHERE lot_expires_at >= $day AND day < $day AND user_id IN (SELECT user_id FROM day_active) GROUP BY lot_txn_id
)
SELECT lot.user_id, lot.expires_at, lot.occurred_at AS earned_at, lot.txn_id AS lot,
       coalesce(lot.available_at, lot.occurred_at) AS available_at,
       CAST(lot.points - coalesce(taken.points, 0) AS BIGINT) AS remaining,
       {PURCHASE_OF_LOT.format(lot="lot.txn_id")} AS purchase_id
FROM points.point_transactions AS lot LEFT JOIN taken ON taken.lot_txn_id = lot.txn_id
WHERE lot.kind IN ('earn', 'merge') AND lot.points > 0 AND lot.expires_at >= $day AND lot.day < $day
  AND lot.user_id IN (SELECT user_id FROM day_active) AND lot.points > coalesce(taken.points, 0)
  AND lot.txn_id NOT IN (SELECT lot_txn_id FROM day_moves)
UNION ALL  -- a merged profile's lots, moved in at 00:00
SELECT into_id, expires_at, $day::TIMESTAMP, 'merge:' || lot_txn_id, available_at, size,
       {PURCHASE_OF_LOT.format(lot="lot_txn_id")}
FROM day_moves
"""


# Unpaid clawbacks, oldest first; `upto` is where each ends in the customer's queue of debts (what earns pay in turn).
DAY_OPEN_DEBTS = f"""
CREATE OR REPLACE TEMP TABLE day_open_debts AS
WITH debts AS (
    SELECT * FROM points.point_transactions AS debt
    WHERE {is_debt("debt")} AND debt.day < $day AND debt.user_id IN (SELECT user_id FROM day_active)
      AND debt.txn_id NOT IN (SELECT debt_txn_id FROM day_debt_moves)
), owed AS (  -- what lots paid of a debt is on or after its day: older allocations are not read
    SELECT debt.user_id, debt.occurred_at, debt.txn_id, CAST(-debt.points - coalesce(sum(paid.points), 0) AS BIGINT) AS owed
    FROM debts AS debt
    LEFT JOIN points.lot_allocations AS paid
           ON paid.txn_id = debt.txn_id AND paid.day < $day AND paid.day >= (SELECT min(day) FROM debts)
    GROUP BY debt.user_id, debt.occurred_at, debt.txn_id, debt.points HAVING owed > 0
)
SELECT user_id, occurred_at, txn_id, owed,
       CAST(sum(owed) OVER (PARTITION BY user_id ORDER BY occurred_at, txn_id ROWS UNBOUNDED PRECEDING) AS BIGINT) AS upto
FROM owed
"""


# The day as a fold over each customer's steps, all customers at once (step k of every customer in one round). The
# state is small: every point of the queue before `p` is spent, and `holes` are the spent parts after it (a clawback
# took from its own lot, an earn paid debts), each with `f`, where it starts counting only unspent points (`gone`:
# the holes already behind p). Debts are a queue too: paid up to `pd`, owed up to `dend`.
#   expire: every unspent point up to the lots expiring then; a closure: up to every lot born before it.
#   earns: pay the unpaid clawbacks first, oldest first (a hole at the start of their lots); the rest are lots.
#   clawback: the purchase's earn, from what is left of its own lot (a hole at its end), then from the queue, earliest
#             expiry first (pending or not); what is still missing is owed, and the next earns pay it.
#   use: from the usable lots, earliest expiry first; refused when they hold fewer points than asked.
# A step spends `w` unspent points from p on: p moves past them and past the holes it meets on the way.
HOLES = "STRUCT(a BIGINT, b BIGINT, f BIGINT, own BOOLEAN)[]"


def _holes_sum(holes: str, value: str) -> str:
    """The sum of `value` over the holes (0 for none: a step without holes runs no lambda, which costs most)."""
    return (
        f"CASE WHEN array_length({holes}) = 0 THEN 0 "
        f"ELSE CAST(coalesce(list_sum(list_transform({holes}, lambda h: {value})), 0) AS BIGINT) END"
    )


DAY_FOLD = f"""
CREATE OR REPLACE TEMP TABLE day_fold AS
WITH RECURSIVE fold AS (
    SELECT user_id, CAST(0 AS BIGINT) AS k, CAST(0 AS BIGINT) AS n, '' AS kind, '' AS ref, CAST(0 AS BIGINT) AS p, CAST(0 AS BIGINT) AS gone,
           CAST([] AS {HOLES}) AS holes, CAST(0 AS BIGINT) AS pd, CAST(coalesce(max(upto), 0) AS BIGINT) AS dend,
           CAST(0 AS BIGINT) AS p_from, false AS refused, CAST(NULL AS BIGINT) AS own_a, CAST(NULL AS BIGINT) AS own_b,
           CAST(0 AS BIGINT) AS missing, CAST(0 AS BIGINT) AS dend_from, CAST(0 AS BIGINT) AS paid,
           CAST(0 AS BIGINT) AS pd_from, CAST(0 AS BIGINT) AS earns_from
    FROM (SELECT DISTINCT user_id FROM day_run) AS c LEFT JOIN day_open_debts AS d USING (user_id)
    GROUP BY user_id
    UNION ALL
    SELECT user_id, k, n, kind, ref, p + w + passed, gone + passed,
           CASE WHEN passed = 0 THEN holes ELSE list_filter(holes, lambda h: h.f >= p - gone + w) END, pd + paid,
           dend + missing,
           p, refused, CASE WHEN took > 0 THEN new_a END, CASE WHEN took > 0 THEN new_b END, missing, dend, paid, pd,
           upto
    FROM (
        SELECT *, {_holes_sum("holes", "CASE WHEN h.f < p - gone + w THEN h.b - h.a ELSE 0 END")} AS passed
        FROM (  -- what the step spends from p on, and what a clawback still misses
            SELECT *, CASE WHEN kind = 'use' AND NOT refused THEN points WHEN kind = 'clawback' THEN least(points - took, free)
                           WHEN kind IN ('expire', 'close') THEN free ELSE 0 END AS w,
                      CASE WHEN kind = 'clawback' THEN points - took - least(points - took, free) ELSE 0 END AS missing
            FROM (
                SELECT *, kind = 'use' AND free < points AS refused
                FROM (  -- the unspent points between p and what the step may reach
                    SELECT *, CASE WHEN upto > p THEN upto - p - {
    _holes_sum("holes", "greatest(0, least(upto, h.b) - h.a)")
}
                                   ELSE 0 END AS free
                    FROM (  -- the step's new hole, if any, in the state
                        SELECT user_id, k, n, kind, ref, p, gone, pd, dend, points, upto, took, paid, new_a, new_b,
                               CASE WHEN new_a IS NULL THEN holes
                                    ELSE list_concat(list_transform(holes, lambda h: {{'a': h.a, 'b': h.b,
                                             'f': CASE WHEN h.a >= new_b THEN h.f - (new_b - new_a) ELSE h.f END,
                                             'own': h.own}}),
                                         [{{'a': new_a, 'b': new_b, 'f': new_a - gone -
                                            {_holes_sum("holes", "CASE WHEN h.b <= new_a THEN h.b - h.a ELSE 0 END")},
                                           'own': took > 0}}])
                               END AS holes
                        FROM (
                            SELECT *, CASE WHEN took > 0 THEN own_end - took WHEN paid > 0 THEN upto END AS new_a,
                                      CASE WHEN took > 0 THEN own_end WHEN paid > 0 THEN upto + paid END AS new_b
                            FROM (  -- a clawback's take from its own lot (unspent part: after p, before its holes)
                                SELECT *,
                                    CASE WHEN kind = 'clawback' AND own_e > greatest(p, own_s) THEN least(points,
                                        own_e - greatest(p, own_s) - {
    _holes_sum("holes", "greatest(0, least(own_e, h.b) - greatest(p, own_s, h.a))")
})
                                        ELSE 0 END AS took,
                                    own_e - {
    _holes_sum("holes", "CASE WHEN h.own AND h.a >= own_s AND h.b <= own_e THEN h.b - h.a ELSE 0 END")
}
                                        AS own_end,
                                    CASE WHEN kind = 'earn' THEN least(dend - pd, points) ELSE 0 END AS paid
                                FROM (SELECT f.user_id, r.k, r.n, r.kind, r.ref, f.p, f.gone, f.holes, f.pd, f.dend,
                                             r.points, r.upto, r.own_s, r.own_e
                                      FROM fold AS f JOIN day_run AS r ON r.user_id = f.user_id AND r.k = f.k + 1)
                            )
                        )
                    )
                )
            )
        )
    )
)
SELECT * FROM fold WHERE k > 0
"""
