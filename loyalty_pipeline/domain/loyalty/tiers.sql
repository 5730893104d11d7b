-- name: ddl
CREATE SCHEMA IF NOT EXISTS loyalty;
CREATE TABLE IF NOT EXISTS loyalty.tier_history (  -- one row per change of a member's tier
    user_id VARCHAR NOT NULL,
    tier VARCHAR NOT NULL,
    valid_from TIMESTAMP NOT NULL,     -- the instant of the change
    valid_until TIMESTAMP,             -- the next change; NULL while current
    reason VARCHAR NOT NULL,           -- upgrade | period_end | grace_end | return
    qualifying_value DECIMAL(18,2) NOT NULL,  -- the period's value that decided it
    day DATE NOT NULL
);
-- each member's tier at loyalty.tier_status_as_of (a row is the same at any later instant before tier_expires_at,
-- so only the members touched or due are rewritten)
CREATE TABLE IF NOT EXISTS loyalty.tier_status (
    user_id VARCHAR NOT NULL, tier VARCHAR NOT NULL, tier_since TIMESTAMP,
    tier_expires_at TIMESTAMP,         -- the next evaluation (period end, or grace end); NULL: lifetime
    period_value DECIMAL(18,2) NOT NULL, next_tier VARCHAR, to_next_tier DECIMAL(18,2),
    to_keep_tier DECIMAL(18,2)         -- what the period still needs for the tier to be kept; NULL: nothing
);
CREATE TABLE IF NOT EXISTS loyalty.tier_status_as_of (as_of TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS loyalty.tier_revisions (  -- tier changes a later run withdrew or added before as_of
    run_id VARCHAR NOT NULL, revised_at TIMESTAMP NOT NULL, change VARCHAR NOT NULL, user_id VARCHAR NOT NULL,
    tier VARCHAR NOT NULL, valid_from TIMESTAMP NOT NULL, reason VARCHAR NOT NULL, qualifying_value DECIMAL(18,2)
);

-- Each member's period ends from their anchor, through the first at or after as_of (the tier's expiry). The k-th is
-- the anchor plus k periods, computed from the anchor each time: a member anchored on 29 February is evaluated on
-- 28 February, then on 29 February again.
-- name: ends
CREATE OR REPLACE TEMP TABLE tier_ends AS
WITH anchored AS (
    SELECT user_id, anchor,
           CASE WHEN $months > 0 THEN date_diff('month', anchor, $as_of) ELSE date_diff('day', anchor, $as_of) END
               AS span
    FROM (SELECT user_id, CAST(date_trunc($trunc, min(purchased_at)) AS TIMESTAMP) AS anchor FROM tier_purchases
          WHERE purchased_at < $as_of GROUP BY user_id)
)
SELECT user_id, k, anchor + (k * $months) * INTERVAL 1 MONTH + (k * $days) * INTERVAL 1 DAY AS end_at
FROM (SELECT user_id, anchor,
             unnest(range(1, CAST(floor(CAST(span AS DOUBLE) / ($months + $days)) AS BIGINT) + 2)) AS k
      FROM anchored WHERE $months + $days > 0)

-- Each member's events before as_of: period ends and their grace ends, purchases, and the returns that take back
-- a purchase of the current period (a purchase of an earlier period counted in a period already evaluated).
-- name: events
CREATE OR REPLACE TEMP TABLE tier_events AS
WITH bought AS (
    SELECT user_id, purchase_id, purchased_at, returned_at,
           CAST(CASE $measure WHEN 'spend' THEN coalesce(price, 0)
                              WHEN 'points_earned' THEN floor(coalesce(price, 0) * $earn_rate::DECIMAL(18,6))
                              ELSE 1 END AS DECIMAL(18,2)) AS v
    FROM tier_purchases WHERE purchased_at < $as_of
), periods AS (  -- the period of a returned purchase and of its return: how many period ends came before each
    SELECT b.purchase_id, count(CASE WHEN e.end_at <= b.purchased_at THEN 1 END) AS bought_in,
           count(CASE WHEN e.end_at <= b.returned_at THEN 1 END) AS returned_in
    FROM bought AS b LEFT JOIN tier_ends AS e ON e.user_id = b.user_id
    WHERE b.returned_at < $as_of GROUP BY b.purchase_id
)
SELECT user_id, end_at AS ts, 1 AS phase, 'end:' || CAST(k AS VARCHAR) AS ref, 'period_end' AS kind,
       0::DECIMAL(18,2) AS delta
FROM tier_ends WHERE end_at < $as_of
UNION ALL
SELECT user_id, end_at + $grace_days * INTERVAL 1 DAY, 0, 'grace:' || CAST(k AS VARCHAR), 'grace', 0::DECIMAL(18,2)
FROM tier_ends WHERE $grace_days > 0 AND end_at + $grace_days * INTERVAL 1 DAY < $as_of
UNION ALL
SELECT user_id, purchased_at, 2, purchase_id, 'purchase', v FROM bought
UNION ALL
SELECT b.user_id, b.returned_at, 3, b.purchase_id, 'return', -b.v
FROM bought AS b JOIN periods AS p ON p.purchase_id = b.purchase_id AND p.bought_in = p.returned_in

-- Each member's events as one list, in order (at one instant: grace end, period end, purchase, return; then ref).
-- name: starts
CREATE OR REPLACE TEMP TABLE tier_starts AS
SELECT user_id, list_sort(list({'ts': ts, 'phase': phase, 'ref': ref, 'kind': kind, 'delta': delta})) AS events
FROM tier_events GROUP BY user_id

-- The tier through each member's events (all members' n-th events in one step). State: the rank held (0 the
-- default tier), the period's value, a pending downgrade (its grace end and target). `reason` is set on a step
-- that changes the rank; `decided` is the value that decided it.
-- name: fold
CREATE OR REPLACE TEMP TABLE tier_fold AS
WITH RECURSIVE fold AS (
    SELECT user_id, events, 0 AS n, 0 AS rank, 0::DECIMAL(18,2) AS value, NULL::TIMESTAMP AS grace_at,
           0 AS target, NULL::VARCHAR AS reason, 0::DECIMAL(18,2) AS decided, NULL::TIMESTAMP AS ts, thresholds
    FROM tier_starts CROSS JOIN tier_rule
    UNION ALL
    SELECT user_id, events, n,
           CASE WHEN upgrade THEN q
                WHEN period_drop AND $grace_days = 0 THEN drop_to
                WHEN grace_drop THEN greatest(target, q)
                WHEN return_drop THEN q
                ELSE rank END,
           CAST(CASE WHEN e.kind = 'period_end' THEN 0 ELSE after END AS DECIMAL(18,2)),
           CASE WHEN period_drop AND $grace_days > 0 THEN e.ts + $grace_days * INTERVAL 1 DAY
                WHEN upgrade OR return_drop OR (e.kind = 'grace' AND grace_at = e.ts) THEN NULL
                ELSE grace_at END,
           CASE WHEN period_drop THEN drop_to ELSE target END,
           CASE WHEN upgrade THEN 'upgrade' WHEN period_drop AND $grace_days = 0 THEN 'period_end'
                WHEN grace_drop THEN 'grace_end' WHEN return_drop THEN 'return' END,
           CAST(CASE WHEN e.kind = 'period_end' THEN value ELSE after END AS DECIMAL(18,2)),
           e.ts, thresholds
    FROM (
        SELECT *,
               e.kind = 'purchase' AND q > rank AS upgrade,
               e.kind = 'period_end' AND q < rank AS period_drop,
               CASE $one_down WHEN true THEN rank - 1 ELSE q END AS drop_to,
               e.kind = 'grace' AND grace_at = e.ts AND q < rank AS grace_drop,
               e.kind = 'return' AND $on_return AND q < rank
                   AND array_length(list_filter(thresholds, lambda x: x < value)) >= rank AS return_drop
        FROM (  -- the value after the event, and the rank it qualifies for (a period end: the period's value)
            SELECT *, array_length(list_filter(thresholds, lambda x: x < after)) AS q
            FROM (SELECT user_id, events, n + 1 AS n, rank, value, grace_at, target, thresholds,
                         events[n + 1] AS e, value + events[n + 1].delta AS after
                  FROM fold WHERE n < array_length(events))
        )
    )
)
SELECT * EXCLUDE (events, thresholds) FROM fold

-- Lifetime tiers need no fold: with downgrade_on_return the tier is what the running value earns, without it the
-- highest that any running value earned (both what the fold gives, in window functions: a member with thousands of
-- purchases costs no more than their rows). The same columns as the fold's.
-- name: fold_lifetime
CREATE OR REPLACE TEMP TABLE tier_fold AS
WITH running AS (
    SELECT user_id, ts, row_number() OVER (PARTITION BY user_id ORDER BY ts, phase, ref) AS n,
           CAST(sum(delta) OVER (PARTITION BY user_id ORDER BY ts, phase, ref ROWS UNBOUNDED PRECEDING)
                AS DECIMAL(18,2)) AS value
    FROM tier_events
), earned AS (
    SELECT running.*, array_length(list_filter(rule.thresholds, lambda x: x < running.value)) AS q
    FROM running CROSS JOIN tier_rule AS rule
), ranked AS (
    SELECT *, CASE WHEN $on_return THEN q
                   ELSE max(q) OVER (PARTITION BY user_id ORDER BY n ROWS UNBOUNDED PRECEDING) END AS rank
    FROM earned
)
SELECT user_id, n, rank, value, NULL::TIMESTAMP AS grace_at, 0 AS target,
       CASE WHEN rank > coalesce(lag(rank) OVER (PARTITION BY user_id ORDER BY n), 0) THEN 'upgrade'
            WHEN rank < coalesce(lag(rank) OVER (PARTITION BY user_id ORDER BY n), 0) THEN 'return' END AS reason,
       value AS decided, ts
FROM ranked

-- name: history
SELECT f.user_id, l.name AS tier, f.ts AS valid_from,
       lead(f.ts) OVER (PARTITION BY f.user_id ORDER BY f.n) AS valid_until,
       f.reason, f.decided AS qualifying_value, CAST(f.ts AS DATE) AS day
FROM tier_fold AS f JOIN tier_levels AS l ON l.rank = f.rank
WHERE f.reason IS NOT NULL

-- Each member's state after their last event, and what the period still needs: spend grows by cents, counts
-- and points by ones, and a tier needs more than its threshold.
-- name: status
SELECT f.user_id, held.name AS tier, since.changed_at AS tier_since,
       coalesce(f.grace_at, expiry.end_at) AS tier_expires_at,
       f.value AS period_value, up.name AS next_tier, up.above - f.value + $unit AS to_next_tier,
       CASE WHEN f.rank > 0 AND $months + $days > 0 THEN greatest(held.above - f.value + $unit, 0) END AS to_keep_tier
FROM (SELECT * FROM tier_fold QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY n DESC) = 1) AS f
JOIN tier_levels AS held ON held.rank = f.rank
LEFT JOIN tier_levels AS up ON up.rank = f.rank + 1
LEFT JOIN (SELECT user_id, max(ts) AS changed_at FROM tier_fold WHERE reason IS NOT NULL GROUP BY user_id) AS since
       ON since.user_id = f.user_id
LEFT JOIN (SELECT user_id, min(end_at) AS end_at FROM tier_ends WHERE end_at >= $as_of GROUP BY user_id) AS expiry
       ON expiry.user_id = f.user_id
