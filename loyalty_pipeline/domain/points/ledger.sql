-- name: ddl
CREATE SCHEMA IF NOT EXISTS points;
CREATE TABLE IF NOT EXISTS points.point_transactions (
    txn_id VARCHAR NOT NULL,       -- earn:<purchase_id> | bonus:<campaign>:<purchase_id> | use:<redemption_id>
                                   -- | expire:<lot> | merge[-out]:<lot>
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

-- The person each of the day's redemption, closure and return keys resolves to on the day (identity.id_graph).
-- name: day_people
CREATE OR REPLACE TEMP TABLE day_people AS
SELECT id_value, arg_max(customer_id, linked_on) AS customer_id FROM identity.id_graph
WHERE strength = 'strong' AND linked_on <= $day
  AND id_value IN (SELECT user_id FROM raw.redemptions WHERE day = $day
                   UNION SELECT user_id FROM raw.users WHERE tombstone AND day = $day
                   UNION SELECT user_id FROM loyalty.returns WHERE day = $day
                   UNION SELECT user_id FROM raw.events WHERE day = $day)
GROUP BY id_value

-- A merge (identity.merges) at 00:00 of its day moves what is left of the merged profile's lots to the person it
-- became part of, with their expiry: a `merge` row takes each lot's rest out, another puts it in as a new lot. Lots
-- expiring at that very instant expire first, where they are.
-- name: day_moves
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

-- The day's redemptions, each counted once by redemption_id (the earliest message wins, across days too).
-- name: day_redemptions
CREATE OR REPLACE TEMP TABLE day_redemptions AS
SELECT redemption_id, user_id, event_ts, points, location, {raw} AS raw,
       CASE WHEN row_number() OVER (PARTITION BY redemption_id ORDER BY event_ts, kafka_partition, kafka_offset, location) > 1
                 OR redemption_id IN (SELECT redemption_id FROM raw.redemptions WHERE day < $day AND NOT tombstone)
            THEN 'duplicate redemption_id' END AS refusal
FROM day_redemptions_by_person AS r
WHERE NOT tombstone

-- The day's earns: each purchase's lot, usable from `available_at` (points.pending_days later), of price x earn_rate
-- x the earn multiplier of the tier held before it (day_bought); each campaign award's lot beside it, with the
-- same expiry; and each event award's lot. `purchase_id` is what a clawback names (an award's own lot key),
-- `source_ref` the purchase (an event award's: its message).
-- name: day_earns
CREATE OR REPLACE TEMP TABLE day_earns AS
SELECT * FROM (
    SELECT 'earn:' || purchase_id AS lot_txn_id, user_id, purchased_at AS earned_at,
           ($day + $validity_days + 1)::TIMESTAMP AS expires_at,
           purchased_at + $pending_days * INTERVAL 1 DAY AS available_at,
           CAST(floor(CAST(price * $earn_rate::DECIMAL(18,6) AS DECIMAL(38,8)) * earn_multiplier) AS BIGINT) AS size,
           purchase_id, purchase_id AS source_ref
    FROM day_bought
    UNION ALL
    SELECT lot, user_id, purchased_at, ($day + $validity_days + 1)::TIMESTAMP,
           purchased_at + $pending_days * INTERVAL 1 DAY, paid, lot, purchase_id
    FROM day_bonuses
    UNION ALL
    SELECT lot, user_id, awarded_at, ($day + $validity_days + 1)::TIMESTAMP, awarded_at + $pending_days * INTERVAL 1 DAY,
           paid, lot, source_ref
    FROM day_event_awards)
WHERE size > 0

-- The day's returns, each with what its purchase's lots earned: the clawbacks, one per lot (the earn and each
-- award; none for a purchase that earned nothing). A return is at most `returns.window_days` after its purchase,
-- so the lots are among the rows of those days.
-- name: day_returns
CREATE OR REPLACE TEMP TABLE day_returns AS
SELECT r.user_id, r.returned_at, lot.lot_key AS purchase_id, lot.points, r.purchase_id AS source_ref
FROM day_returns_by_person AS r
JOIN (SELECT source_ref AS bought, CASE WHEN starts_with(txn_id, 'earn:') THEN source_ref ELSE txn_id END AS lot_key,
             points
      FROM points.point_transactions
      WHERE kind = 'earn' AND day >= $day - $window_days AND day < $day
        AND source_ref IN (SELECT purchase_id FROM day_returns_by_person)
      UNION ALL
      SELECT source_ref, purchase_id, size FROM day_earns) AS lot
  ON lot.bought = r.purchase_id
WHERE lot.points > 0

-- For each customer something happens to today: the day's events, numbered in order (`n`; at one instant: expire,
-- earn, return, use; then by ref, unique per customer), their open lots and unpaid clawbacks at the start of the
-- day. Customers with no event today are not read, so a day's cost follows its events, not the length of history.
-- name: day_events
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

-- name: new_rows
CREATE OR REPLACE TEMP TABLE day_rows AS
SELECT e.ref AS txn_id, s.user_id, e.ts AS occurred_at, 'earn' AS kind, e.points, e.expires_at,
       lot.source_ref, $day AS day, e.available_at
FROM day_steps AS s JOIN day_earns AS lot ON lot.lot_txn_id = s.e.ref WHERE e.kind = 'earn'
UNION ALL
SELECT e.ref, s.user_id, e.ts, 'clawback', -e.points, NULL, lot.source_ref, $day, NULL
FROM day_steps AS s JOIN day_returns AS lot ON lot.purchase_id = s.e.purchase_id
WHERE e.kind = 'clawback' AND e.purchase_id IS NOT NULL  -- a moved debt's row is its merge pair
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

-- Which lots each row took its points from (use, expire, clawback), and which later earn lots paid a clawback.
-- name: day_allocations
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

-- Before a rebuilt day's rows replace the old ones, the difference is kept (insert-only, nothing is lost).
-- name: revise_day
INSERT INTO points.ledger_revisions
WITH old AS (SELECT * FROM points.point_transactions WHERE day = $day),
changes AS (
    SELECT 'withdrawn' AS change, * FROM (SELECT * FROM old EXCEPT ALL SELECT * FROM day_rows)
    UNION ALL SELECT 'added', * FROM (SELECT * FROM day_rows EXCEPT ALL SELECT * FROM old)
)
SELECT $run_id, $revised_at, $reason, change, txn_id, user_id, occurred_at, kind, points, expires_at, source_ref, day,
       sum(CASE change WHEN 'added' THEN points ELSE -points END) OVER (PARTITION BY user_id)
FROM changes
