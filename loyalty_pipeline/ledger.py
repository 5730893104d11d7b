"""One day of the point ledger, in SQL.

Lots form a queue per customer in consumption order (earliest expiry, then earliest earned). Every point that
leaves - used or expired - leaves from the front of that queue, so a customer's state is one number: how many
points of the queue are gone (`removed`). A use adds its points to it; an expiry or a closed account lifts it to
the end of the lots concerned. That makes the whole day a few window functions; the only order-dependent part is
a refused redemption, which changes what every later event of that customer sees, so refusals are settled in
rounds: each round refuses the first failing redemption of each customer, until no redemption fails.
"""

from datetime import date

import duckdb

from loyalty_pipeline.chain import Window, publish
from loyalty_pipeline.warehouse import first_source_day_before

DDL = """
CREATE SCHEMA IF NOT EXISTS points;
CREATE TABLE IF NOT EXISTS points.point_transactions (
    txn_id VARCHAR NOT NULL,       -- earn:<purchase_id> | use:<redemption_id> | expire:<lot> | merge[-out]:<lot>
    user_id VARCHAR NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    kind VARCHAR NOT NULL,         -- earn | use | expire | merge (a lot moved to the person a profile merged into)
    points BIGINT NOT NULL,        -- signed: earn and merge-in > 0, use, expire and merge-out < 0
    expires_at TIMESTAMP,          -- lots (earn, merge-in): when what is left of the lot expires
    source_ref VARCHAR NOT NULL,   -- earn: purchase_id, use: redemption_id, expire and merge: the lot's txn_id
    day DATE NOT NULL
);
CREATE TABLE IF NOT EXISTS points.lot_allocations (  -- which lots each use and expire row took its points from
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

# The person each of the day's redemption and closure keys resolves to on the day (identity.id_graph).
DAY_PEOPLE = """
CREATE OR REPLACE TEMP TABLE day_people AS
SELECT id_value, arg_max(customer_id, linked_on) AS customer_id FROM identity.id_graph
WHERE strength = 'strong' AND linked_on <= $day
  AND id_value IN (SELECT user_id FROM raw.redemptions WHERE day = $day
                   UNION SELECT user_id FROM raw.users WHERE tombstone AND day = $day)
GROUP BY id_value
"""


# Raw rows of a day with `user_id` the person their key resolves to.
def _by_person(table: str) -> str:
    return (
        f"SELECT r.* REPLACE (coalesce(p.customer_id, r.user_id) AS user_id) FROM {table} AS r "
        "LEFT JOIN day_people AS p ON p.id_value = r.user_id WHERE r.day = $day"
    )


REDEMPTIONS_OF_DAY = _by_person("raw.redemptions")
USERS_OF_DAY = _by_person("raw.users")

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
SELECT lot.txn_id AS lot_txn_id, lot.user_id, merged.into_id, lot.expires_at, lot.points - coalesce(taken.points, 0) AS size
FROM points.point_transactions AS lot
JOIN merged ON merged.merged_id = lot.user_id
LEFT JOIN taken ON taken.lot_txn_id = lot.txn_id
WHERE lot.kind IN ('earn', 'merge') AND lot.points > 0 AND lot.expires_at > $day AND lot.day < $day
  AND lot.points > coalesce(taken.points, 0)
"""

# The queue at the start of the day, for the customers something happens to: what is left of their open lots,
# then the day's new lots. Customers with no event and no expiry today are not touched, so a day's cost follows
# its events, not the length of history.
DAY_LOTS = f"""
CREATE OR REPLACE TEMP TABLE day_lots AS
WITH active AS (
    SELECT user_id FROM loyalty.enriched_purchases WHERE day = $day
    UNION SELECT user_id FROM ({REDEMPTIONS_OF_DAY})
    UNION SELECT user_id FROM ({USERS_OF_DAY}) WHERE tombstone
    UNION SELECT user_id FROM points.point_transactions
          WHERE kind IN ('earn', 'merge') AND points > 0 AND expires_at >= $day AND expires_at < $day + 1 AND day < $day
    UNION SELECT into_id FROM day_moves
), taken AS (
    SELECT lot_txn_id, sum(points) AS points FROM points.lot_allocations
    WHERE lot_expires_at >= $day AND day < $day AND user_id IN (SELECT user_id FROM active) GROUP BY lot_txn_id
), open_lots AS (
    SELECT lot.txn_id AS lot_txn_id, lot.user_id, lot.occurred_at AS earned_at, lot.expires_at,
           lot.points - coalesce(taken.points, 0) AS size, NULL AS purchase_id
    FROM points.point_transactions AS lot LEFT JOIN taken ON taken.lot_txn_id = lot.txn_id
    WHERE lot.kind IN ('earn', 'merge') AND lot.points > 0 AND lot.expires_at >= $day AND lot.day < $day
      AND lot.user_id IN (SELECT user_id FROM active) AND lot.txn_id NOT IN (SELECT lot_txn_id FROM day_moves)
), moved_in AS (
    SELECT 'merge:' || lot_txn_id AS lot_txn_id, into_id AS user_id, $day::TIMESTAMP AS earned_at, expires_at, size,
           NULL AS purchase_id
    FROM day_moves
), new_lots AS (
    SELECT 'earn:' || purchase_id AS lot_txn_id, user_id, purchased_at AS earned_at,
           ($day + $validity_days + 1)::TIMESTAMP AS expires_at,
           floor(price * $earn_rate::DECIMAL(18,6))::BIGINT AS size, purchase_id
    FROM loyalty.enriched_purchases
    WHERE day = $day AND floor(price * $earn_rate::DECIMAL(18,6)) > 0
), queue AS (
    SELECT * FROM open_lots WHERE size > 0
    UNION ALL BY NAME SELECT * FROM moved_in
    UNION ALL BY NAME SELECT * FROM new_lots
)
SELECT *, sum(size) OVER (PARTITION BY user_id ORDER BY expires_at, earned_at, lot_txn_id
                          ROWS UNBOUNDED PRECEDING) AS queue_end
FROM queue
"""

# Everything that happens to a customer's points during the day, in order: at one instant expire, earn, use.
DAY_EVENTS = f"""
CREATE OR REPLACE TEMP TABLE day_events AS
WITH opening AS (
    SELECT user_id, sum(size) AS points FROM day_lots WHERE purchase_id IS NULL GROUP BY user_id
), expiries AS (
    SELECT user_id, expires_at AS happens_at, 0 AS phase, 'expire' AS kind, max(queue_end) AS lift_to,
           NULL::BIGINT AS points, 'expiry' AS ref
    FROM day_lots WHERE expires_at < $day + 1 GROUP BY user_id, expires_at
), closures AS (
    SELECT closed.user_id, closed.event_ts, 0, 'expire',
           coalesce(max(lots.queue_end), 0), NULL, 'closure:' || closed.kafka_partition || ':' || closed.kafka_offset
    FROM ({USERS_OF_DAY}) AS closed LEFT JOIN day_lots AS lots
         ON lots.user_id = closed.user_id AND lots.earned_at < closed.event_ts  -- an earn at that instant comes after
    WHERE closed.tombstone
    GROUP BY ALL
), earns AS (
    SELECT user_id, earned_at, 1, 'earn', NULL, size, lot_txn_id FROM day_lots WHERE purchase_id IS NOT NULL
), uses AS (
    SELECT user_id, event_ts, 2, 'use', NULL, points, redemption_id FROM day_redemptions WHERE refusal IS NULL
), events AS (
    SELECT * FROM expiries UNION ALL SELECT * FROM closures UNION ALL SELECT * FROM earns UNION ALL SELECT * FROM uses
)
SELECT events.*, coalesce(opening.points, 0) AS opening,
       row_number() OVER (PARTITION BY events.user_id ORDER BY happens_at, phase, ref) AS seq
FROM events LEFT JOIN opening USING (user_id)
"""

# The day's redemptions, each counted once by redemption_id (the earliest message wins, across days too).
DAY_REDEMPTIONS = f"""
CREATE OR REPLACE TEMP TABLE day_redemptions AS
SELECT redemption_id, user_id, event_ts, points, location, to_json(r)::VARCHAR AS raw,
       CASE WHEN row_number() OVER (PARTITION BY redemption_id ORDER BY event_ts, kafka_partition, kafka_offset) > 1
                 OR redemption_id IN (SELECT redemption_id FROM raw.redemptions WHERE day < $day AND NOT tombstone)
            THEN 'duplicate redemption_id' END AS refusal
FROM ({REDEMPTIONS_OF_DAY}) AS r
WHERE NOT tombstone
"""

# Position of every event in the queue, given the redemptions refused so far.
DAY_FLOW = """
CREATE OR REPLACE TEMP TABLE day_flow AS
WITH flagged AS (
    SELECT *, kind = 'use' AND ref NOT IN (SELECT redemption_id FROM refused) AS accepted FROM day_events
), running AS (
    SELECT *,
           opening + sum(CASE WHEN kind = 'earn' THEN points ELSE 0 END) OVER upto AS earned,
           coalesce(sum(CASE WHEN accepted THEN points ELSE 0 END) OVER before, 0) AS used_before
    FROM flagged
    WINDOW upto AS (PARTITION BY user_id ORDER BY seq ROWS UNBOUNDED PRECEDING),
           before AS (PARTITION BY user_id ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
), lifted AS (
    SELECT *, used_before + greatest(0, coalesce(max(lift_to - used_before) OVER (
                  PARTITION BY user_id ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)) AS removed_before
    FROM running
)
SELECT *, earned - removed_before AS balance_before,
       CASE WHEN accepted THEN points WHEN kind = 'expire' THEN greatest(0, lift_to - removed_before) END AS taken
FROM lifted
"""

FIRST_FAILING_USES = """
INSERT INTO refused
SELECT arg_min(ref, seq) FROM day_flow WHERE accepted AND balance_before < points GROUP BY user_id
"""

# Which lots each use or expiry takes its points from: the overlap of its span of the queue with each lot's.
DAY_ALLOCATIONS = """
CREATE OR REPLACE TEMP TABLE day_allocations AS
SELECT flow.kind, flow.happens_at, flow.ref, lots.lot_txn_id, lots.expires_at AS lot_expires_at, flow.user_id,
       least(flow.removed_before + flow.taken, lots.queue_end)
         - greatest(flow.removed_before, lots.queue_end - lots.size) AS points
FROM day_flow AS flow JOIN day_lots AS lots
     ON lots.user_id = flow.user_id
    AND lots.queue_end > flow.removed_before
    AND lots.queue_end - lots.size < flow.removed_before + flow.taken
WHERE flow.taken > 0
"""

NEW_ROWS = """
CREATE OR REPLACE TEMP TABLE day_rows AS
SELECT lot_txn_id AS txn_id, user_id, earned_at AS occurred_at, 'earn' AS kind, size AS points, expires_at,
       purchase_id AS source_ref, $day AS day
FROM day_lots WHERE purchase_id IS NOT NULL
UNION ALL
SELECT 'use:' || ref, user_id, happens_at, 'use', -taken, NULL, ref, $day FROM day_flow WHERE accepted
UNION ALL
SELECT 'expire:' || lot_txn_id, user_id, happens_at, 'expire', -points, NULL, lot_txn_id, $day
FROM day_allocations WHERE kind = 'expire'
UNION ALL
SELECT 'merge-out:' || lot_txn_id, user_id, $day::TIMESTAMP, 'merge', -size, NULL, lot_txn_id, $day FROM day_moves
UNION ALL
SELECT 'merge:' || lot_txn_id, into_id, $day::TIMESTAMP, 'merge', size, expires_at, lot_txn_id, $day FROM day_moves
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
        (
            """INSERT INTO points.lot_allocations
               SELECT CASE kind WHEN 'use' THEN 'use:' || ref ELSE 'expire:' || lot_txn_id END,
                      lot_txn_id, lot_expires_at, user_id, points, $day
               FROM day_allocations
               UNION ALL
               SELECT 'merge-out:' || lot_txn_id, lot_txn_id, expires_at, user_id, size, $day FROM day_moves""",
            on_day,
        ),
        (
            """INSERT INTO raw.rejected_records
               SELECT 'points:redemptions', location, coalesce(refusal, 'insufficient_points'), raw, $day
               FROM day_redemptions
               WHERE refusal IS NOT NULL OR redemption_id IN (SELECT redemption_id FROM refused)""",
            on_day,
        ),
        ("INSERT OR IGNORE INTO points.ledger_days VALUES ($day)", on_day),
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


def build_day(
    conn: duckdb.DuckDBPyConnection, window: Window, day: date, earn_rate, validity_days: int, revision: dict
) -> dict:
    """Computes and writes one day of the ledger in one transaction; returns counts for metadata."""
    params = {"day": day, "earn_rate": earn_rate, "validity_days": validity_days}
    conn.execute(DAY_PEOPLE, {"day": day})
    conn.execute(DAY_MOVES, {"day": day})
    conn.execute(DAY_LOTS, params)
    conn.execute(DAY_REDEMPTIONS, {"day": day})
    conn.execute(DAY_EVENTS, {"day": day})
    conn.execute("CREATE OR REPLACE TEMP TABLE refused (redemption_id VARCHAR)")
    rounds = 0
    while True:
        conn.execute(DAY_FLOW)
        rounds += 1
        before = conn.execute("SELECT count(*) FROM refused").fetchall()[0][0]
        conn.execute(FIRST_FAILING_USES)
        if conn.execute("SELECT count(*) FROM refused").fetchall()[0][0] == before:
            break
    conn.execute(DAY_ALLOCATIONS)
    conn.execute(NEW_ROWS, {"day": day})
    window.refuse_change(
        conn, day, "SELECT * FROM day_rows", "SELECT * FROM points.point_transactions WHERE day = $day"
    )
    revise = [(REVISE_DAY, {"day": day, **revision})] if day in window.rebuilt else []
    publish(conn, revise + write_day(day))
    return {
        "rounds": rounds,
        "refused": conn.execute("SELECT count(*) FROM refused").fetchall()[0][0],
    }
