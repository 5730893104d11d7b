"""One day of the point ledger, in SQL.

Each earn is a lot; uses, expiries and clawbacks take points from lots, and every piece they take is a row of
`points.lot_allocations`. What a return takes back depends on what is left of its own lot, and a refused use
changes what every later event sees, so the day is a fold over each customer's events in order (a recursive CTE
that runs all customers' n-th events in one step): its state is the customer's open lots and unpaid clawbacks.
"""

from datetime import date

import duckdb

from loyalty_pipeline.domain.config import Rules
from loyalty_pipeline.domain.points.fold import (
    DAY_ACTIVE,
    DAY_FOLD,
    DAY_FOLD_PIECES,
    DAY_LIST_FOLDED,
    DAY_OPEN_DEBTS,
    DAY_OPEN_LOTS,
    DAY_QUEUE,
    DAY_RUN,
    DAY_START,
    DAY_STEPS,
    DAY_TIMELINE,
    is_debt,
)
from loyalty_pipeline.lib.chain import Window, mark_built, publish
from loyalty_pipeline.lib.warehouse import columns_of, count, first_source_day_before, row_json

DDL = """
CREATE SCHEMA IF NOT EXISTS points;
CREATE TABLE IF NOT EXISTS points.point_transactions (
    txn_id VARCHAR NOT NULL,       -- earn:<purchase_id> | use:<redemption_id> | expire:<lot> | merge[-out]:<lot>
                                   -- | clawback:<purchase_id>
    user_id VARCHAR NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    kind VARCHAR NOT NULL,         -- earn | use | expire | clawback (a returned purchase's earn taken back)
                                   -- | merge (a lot moved to the person a profile merged into)
    points BIGINT NOT NULL,        -- signed: earn and merge-in > 0, use, expire, clawback and merge-out < 0
    expires_at TIMESTAMP,          -- lots (earn, merge-in): when what is left of the lot expires
    source_ref VARCHAR NOT NULL,   -- earn and clawback: purchase_id, use: redemption_id, expire and merge: the lot
    day DATE NOT NULL,
    available_at TIMESTAMP         -- lots: when uses may draw on them (occurred_at + points.pending_days)
);
ALTER TABLE points.point_transactions ADD COLUMN IF NOT EXISTS available_at TIMESTAMP;  -- ledgers made before it
-- which lots each use, expire and clawback row took its points from; a clawback's unpaid rest (debt) is taken
-- from the customer's next earn lots as they come
CREATE TABLE IF NOT EXISTS points.lot_allocations (
    txn_id VARCHAR NOT NULL,
    lot_txn_id VARCHAR NOT NULL,
    lot_expires_at TIMESTAMP NOT NULL,
    user_id VARCHAR NOT NULL,
    points BIGINT NOT NULL,
    day DATE NOT NULL
);
CREATE TABLE IF NOT EXISTS points.ledger_days (day DATE PRIMARY KEY);  -- days whose end state is in the ledger
CREATE TABLE IF NOT EXISTS points.ledger_revisions (  -- ledger rows a rebuilt day withdrew or added
    run_id VARCHAR NOT NULL, revised_at TIMESTAMP NOT NULL, reason VARCHAR NOT NULL,
    change VARCHAR NOT NULL,       -- withdrawn | added
    txn_id VARCHAR NOT NULL, user_id VARCHAR NOT NULL, occurred_at TIMESTAMP NOT NULL, kind VARCHAR NOT NULL,
    points BIGINT NOT NULL, expires_at TIMESTAMP, source_ref VARCHAR NOT NULL, day DATE NOT NULL,
    balance_change BIGINT NOT NULL -- what the revision of this day did to the customer's balance
);
"""


# The person each of the day's redemption, closure and return keys resolves to on the day (identity.id_graph).
DAY_PEOPLE = """
CREATE OR REPLACE TEMP TABLE day_people AS
SELECT id_value, arg_max(customer_id, linked_on) AS customer_id FROM identity.id_graph
WHERE strength = 'strong' AND linked_on <= $day
  AND id_value IN (SELECT user_id FROM raw.redemptions WHERE day = $day
                   UNION SELECT user_id FROM raw.users WHERE tombstone AND day = $day
                   UNION SELECT user_id FROM loyalty.returns WHERE day = $day)
GROUP BY id_value
"""


def _by_person(conn: duckdb.DuckDBPyConnection, table: str, into: str, day: date) -> None:
    """Temp table `into`: the rows of `table` on `day`, every column, with `user_id` the person their key resolves to
    (`day_people`)."""
    selected = ", ".join(
        "coalesce(p.customer_id, r.user_id) AS user_id" if name == "user_id" else f"r.{name}"
        for name, _ in columns_of(conn, table)
    )
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {into} AS SELECT {selected} FROM {table} AS r "
        "LEFT JOIN day_people AS p ON p.id_value = r.user_id WHERE r.day = $day",
        {"day": day},
    )


# A merge (identity.merges) at 00:00 of its day moves what is left of the merged profile's lots to the person it
# became part of, with their expiry: a `merge` row takes each lot's rest out, another puts it in as a new lot. Lots
# expiring at that very instant expire first, where they are.
DAY_MOVES = """
CREATE OR REPLACE TEMP TABLE day_moves AS
WITH merged AS (SELECT merged_id, into_id FROM identity.merges WHERE day = $day),
taken AS (
    SELECT lot_txn_id, sum(points) AS points FROM points.lot_allocations
    WHERE lot_expires_at > $day AND day < $day AND user_id IN (SELECT merged_id FROM merged) GROUP BY lot_txn_id
)
SELECT lot.txn_id AS lot_txn_id, lot.user_id, merged.into_id, lot.expires_at,
       coalesce(lot.available_at, lot.occurred_at) AS available_at, lot.points - coalesce(taken.points, 0) AS size
FROM points.point_transactions AS lot
JOIN merged ON merged.merged_id = lot.user_id
LEFT JOIN taken ON taken.lot_txn_id = lot.txn_id
WHERE lot.kind IN ('earn', 'merge') AND lot.points > 0 AND lot.expires_at > $day AND lot.day < $day
  AND lot.points > coalesce(taken.points, 0)
"""


# A merge moves the merged profile's unpaid debts too: a `merge` pair (`merge-out:<debt>` settles it on the merged
# profile, `merge:<debt>` owes it on the person), taken at 00:00 from the person's open lots like a clawback, and
# what they cannot cover is the person's debt.
DAY_DEBT_MOVES = f"""
CREATE OR REPLACE TEMP TABLE day_debt_moves AS
SELECT debt.txn_id AS debt_txn_id, debt.user_id, merged.into_id, -debt.points - coalesce(sum(paid.points), 0) AS owed
FROM points.point_transactions AS debt
JOIN identity.merges AS merged ON merged.merged_id = debt.user_id AND merged.day = $day
LEFT JOIN points.lot_allocations AS paid ON paid.txn_id = debt.txn_id AND paid.day < $day
WHERE debt.day < $day AND {is_debt("debt")}
GROUP BY debt.txn_id, debt.user_id, merged.into_id, debt.points HAVING owed > 0
"""


# The day's redemptions, each counted once by redemption_id (the earliest message wins, across days too).
DAY_REDEMPTIONS = """
CREATE OR REPLACE TEMP TABLE day_redemptions AS
SELECT redemption_id, user_id, event_ts, points, location, {raw} AS raw,
       CASE WHEN row_number() OVER (PARTITION BY redemption_id ORDER BY event_ts, kafka_partition, kafka_offset, location) > 1
                 OR redemption_id IN (SELECT redemption_id FROM raw.redemptions WHERE day < $day AND NOT tombstone)
            THEN 'duplicate redemption_id' END AS refusal
FROM day_redemptions_by_person AS r
WHERE NOT tombstone
"""


# The day's earns: each purchase's lot, usable from `available_at` (points.pending_days later).
DAY_EARNS = """
CREATE OR REPLACE TEMP TABLE day_earns AS
SELECT 'earn:' || purchase_id AS lot_txn_id, user_id, purchased_at AS earned_at,
       ($day + $validity_days + 1)::TIMESTAMP AS expires_at, purchased_at + $pending_days * INTERVAL 1 DAY AS available_at,
       floor(price * $earn_rate::DECIMAL(18,6))::BIGINT AS size, purchase_id
FROM loyalty.enriched_purchases
WHERE day = $day AND floor(price * $earn_rate::DECIMAL(18,6)) > 0
"""


# The day's returns, each with what its purchase earned: the clawback (none for a purchase that earned nothing).
# A return is at most `returns.window_days` after its purchase, so the earn is among the rows of those days.
DAY_RETURNS = """
CREATE OR REPLACE TEMP TABLE day_returns AS
SELECT r.user_id, r.returned_at, r.purchase_id, coalesce(earn.points, new.size) AS points
FROM day_returns_by_person AS r
LEFT JOIN points.point_transactions AS earn
       ON earn.txn_id = 'earn:' || r.purchase_id AND earn.day >= $day - $window_days AND earn.day < $day
LEFT JOIN day_earns AS new ON new.purchase_id = r.purchase_id
WHERE coalesce(earn.points, new.size) > 0
"""


# For each customer something happens to today: the day's events, numbered in order (`n`; at one instant: expire,
# earn, return, use; then by ref, unique per customer), their open lots and unpaid clawbacks at the start of the
# day. Customers with no event today are not read, so a day's cost follows its events, not the length of history.
DAY_EVENTS = """
CREATE OR REPLACE TEMP TABLE day_events AS
SELECT user_id, earned_at AS ts, 1 AS phase, lot_txn_id AS ref, 'earn' AS kind, size AS points, purchase_id,
       expires_at, available_at
FROM day_earns
UNION ALL
SELECT user_id, returned_at, 2, 'clawback:' || purchase_id, 'clawback', points, purchase_id, NULL, NULL
FROM day_returns
UNION ALL  -- a merged profile's debt, moved in at 00:00: taken as a clawback of no purchase
SELECT into_id, $day::TIMESTAMP, 2, 'merge:' || debt_txn_id, 'clawback', owed, NULL, NULL, NULL
FROM day_debt_moves
UNION ALL
SELECT user_id, event_ts, 3, redemption_id, 'use', points, NULL, NULL, NULL
FROM day_redemptions WHERE refusal IS NULL
UNION ALL
SELECT user_id, event_ts, 0, 'closure:' || kafka_partition || ':' || kafka_offset, 'close', NULL, NULL, NULL, NULL
FROM day_users_by_person WHERE tombstone
"""


NEW_ROWS = """
CREATE OR REPLACE TEMP TABLE day_rows AS
SELECT e.ref AS txn_id, user_id, e.ts AS occurred_at, 'earn' AS kind, e.points, e.expires_at,
       e.purchase_id AS source_ref, $day AS day, e.available_at
FROM day_steps WHERE e.kind = 'earn'
UNION ALL
SELECT e.ref, user_id, e.ts, 'clawback', -e.points, NULL, e.purchase_id, $day, NULL
FROM day_steps WHERE e.kind = 'clawback' AND e.purchase_id IS NOT NULL  -- a moved debt's row is its merge pair
UNION ALL
SELECT 'use:' || e.ref, user_id, e.ts, 'use', -e.points, NULL, e.ref, $day, NULL
FROM day_steps WHERE e.kind = 'use' AND NOT refused
UNION ALL
SELECT 'expire:' || piece.lot, user_id, e.ts, 'expire', -piece.points, NULL, piece.lot, $day, NULL
FROM (SELECT user_id, e, unnest(pieces) AS piece FROM day_steps WHERE e.kind IN ('expire', 'close'))
UNION ALL
SELECT 'merge-out:' || lot_txn_id, user_id, $day::TIMESTAMP, 'merge', -size, NULL, lot_txn_id, $day, NULL
FROM day_moves
UNION ALL
SELECT 'merge:' || lot_txn_id, into_id, $day::TIMESTAMP, 'merge', size, expires_at, lot_txn_id, $day, available_at
FROM day_moves
UNION ALL
SELECT 'merge-out:' || debt_txn_id, user_id, $day::TIMESTAMP, 'merge', owed, NULL, debt_txn_id, $day, NULL
FROM day_debt_moves
UNION ALL
SELECT 'merge:' || debt_txn_id, into_id, $day::TIMESTAMP, 'merge', -owed, NULL, debt_txn_id, $day, NULL
FROM day_debt_moves
"""


# Which lots each row took its points from (use, expire, clawback), and which later earn lots paid a clawback.
DAY_ALLOCATIONS = """
CREATE OR REPLACE TEMP TABLE day_allocations AS
SELECT CASE e.kind WHEN 'use' THEN 'use:' || e.ref WHEN 'clawback' THEN e.ref ELSE 'expire:' || piece.lot END
           AS txn_id,
       piece.lot AS lot_txn_id, piece.lot_expires_at, user_id, piece.points, $day AS day
FROM (SELECT user_id, e, unnest(pieces) AS piece FROM day_steps)
UNION ALL
SELECT debt.txn, e.ref, e.expires_at, user_id, debt.points, $day
FROM (SELECT user_id, e, unnest(paid) AS debt FROM day_steps)
UNION ALL
SELECT 'merge-out:' || lot_txn_id, lot_txn_id, expires_at, user_id, size, $day FROM day_moves
UNION ALL  -- a moved debt is settled on the merged profile by its merge-out row (at the instant it moved)
SELECT debt_txn_id, 'merge-out:' || debt_txn_id, $day::TIMESTAMP, user_id, owed, $day FROM day_debt_moves
"""


# Before a rebuilt day's rows replace the old ones, the difference is kept (insert-only, nothing is lost).
REVISE_DAY = """
INSERT INTO points.ledger_revisions
WITH old AS (SELECT * FROM points.point_transactions WHERE day = $day),
changes AS (
    SELECT 'withdrawn' AS change, * FROM (SELECT * FROM old EXCEPT ALL SELECT * FROM day_rows)
    UNION ALL SELECT 'added', * FROM (SELECT * FROM day_rows EXCEPT ALL SELECT * FROM old)
)
SELECT $run_id, $revised_at, $reason, change, txn_id, user_id, occurred_at, kind, points, expires_at, source_ref, day,
       sum(CASE change WHEN 'added' THEN points ELSE -points END) OVER (PARTITION BY user_id)
FROM changes
"""


def write_day(day: date) -> list[tuple[str, dict]]:
    """The day's rows replace the ledger's rows of that day: (statement, parameters) pairs for `publish`."""
    on_day = {"day": day}
    return [
        ("DELETE FROM points.point_transactions WHERE day = $day", on_day),
        ("DELETE FROM points.lot_allocations WHERE day = $day", on_day),
        ("DELETE FROM raw.rejected_records WHERE source = 'points:redemptions' AND day = $day", on_day),
        ("INSERT INTO points.point_transactions SELECT * FROM day_rows", {}),
        ("INSERT INTO points.lot_allocations SELECT * FROM day_allocations", {}),
        (
            """INSERT INTO raw.rejected_records
               SELECT 'points:redemptions', location, coalesce(refusal, 'insufficient_points'), raw, $day
               FROM day_redemptions
               WHERE refusal IS NOT NULL
                  OR redemption_id IN (SELECT e.ref FROM day_steps WHERE e.kind = 'use' AND refused)""",
            on_day,
        ),
        (mark_built("points.ledger_days"), on_day),
    ]


def first_event_before(conn: duckdb.DuckDBPyConnection, day: date) -> date | None:
    """The first day with a ledger event before `day`: the ledger cannot start at `day` from nothing after one.
    Loaded events say so, and so do the sources (on an empty warehouse, a run of a later day must not start the
    ledger from zero)."""
    return conn.execute(
        """SELECT min(day) FROM (
               SELECT min(day) AS day FROM loyalty.enriched_purchases WHERE day < $1
               UNION ALL SELECT min(day) FROM raw.redemptions WHERE day < $1
               UNION ALL SELECT min(day) FROM raw.users WHERE tombstone AND day < $1
               UNION ALL SELECT $2)""",
        [day, first_source_day_before(conn, day, ["purchases", "redemptions", "users"])],
    ).fetchall()[0][0]


def build_day(conn: duckdb.DuckDBPyConnection, window: Window, day: date, rules: Rules, revision: dict) -> dict:
    """Computes and writes one day of the ledger in one transaction; returns counts for metadata."""
    on_day = {"day": day}
    conn.execute(DAY_PEOPLE, on_day)
    conn.execute(DAY_MOVES, on_day)
    conn.execute(DAY_DEBT_MOVES, on_day)
    for table, into in (
        ("raw.redemptions", "day_redemptions_by_person"),
        ("raw.users", "day_users_by_person"),
        ("loyalty.returns", "day_returns_by_person"),
    ):
        _by_person(conn, table, into, day)
    conn.execute(DAY_REDEMPTIONS.format(raw=row_json(conn, "day_redemptions_by_person", "r")), on_day)
    conn.execute(
        DAY_EARNS,
        {
            **on_day,
            "earn_rate": str(rules.points.earn_rate),
            "validity_days": rules.points.validity_days,
            "pending_days": rules.points.pending_days,
        },
    )
    conn.execute(DAY_RETURNS, {**on_day, "window_days": rules.returns.window_days})
    for statement in (
        DAY_EVENTS,
        DAY_ACTIVE,
        DAY_OPEN_LOTS,
        DAY_OPEN_DEBTS,
        DAY_TIMELINE,
        DAY_QUEUE,
        DAY_LIST_FOLDED,
        DAY_RUN,
        DAY_FOLD,
        DAY_FOLD_PIECES,
        DAY_START,
        DAY_STEPS,
    ):
        conn.execute(statement, on_day if "$day" in statement else {})
    conn.execute(NEW_ROWS, on_day)
    conn.execute(DAY_ALLOCATIONS, on_day)
    window.refuse_change(
        conn, day, "SELECT * FROM day_rows", "SELECT * FROM points.point_transactions WHERE day = $day"
    )
    revise = [(REVISE_DAY, {"day": day, **revision})] if day in window.rebuilt else []
    publish(conn, revise + write_day(day))
    return {
        "steps": conn.execute("SELECT coalesce(max(n), 0) FROM day_steps").fetchall()[0][0],
        "refused": count(conn, "SELECT 1 FROM day_redemptions WHERE refusal IS NOT NULL")
        + count(conn, "SELECT 1 FROM day_steps WHERE e.kind = 'use' AND refused"),
    }
