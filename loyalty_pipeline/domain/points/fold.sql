-- name: day_active
CREATE OR REPLACE TEMP TABLE day_active AS
SELECT user_id FROM day_events
UNION SELECT user_id FROM points.point_transactions
      WHERE kind IN ('earn', 'merge') AND points > 0 AND expires_at >= $day AND expires_at < $day + 1 AND day < $day
UNION SELECT into_id FROM day_moves

-- name: day_timeline
CREATE OR REPLACE TEMP TABLE day_timeline AS
SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY ts, phase, ref) AS n
FROM (SELECT * FROM day_events
      UNION ALL
      SELECT DISTINCT user_id, expires_at, 0, 'expiry', 'expire', NULL, NULL, NULL, NULL
      FROM day_open_lots WHERE expires_at < $day + 1)

-- Every lot a customer has during the day, in queue order (earliest expiry, then earliest earned; `q`), laid end to
-- end: lot q holds the points [s, e) of the customer's queue. Open lots hold what is left of them; the day's lots
-- (born at their earn, event n) hold the whole earn, and what an earn pays of debts is a hole at its start.
-- name: day_queue
CREATE OR REPLACE TEMP TABLE day_queue AS
SELECT *, e - size AS s
FROM (SELECT *, CAST(sum(size) OVER (PARTITION BY user_id ORDER BY q ROWS UNBOUNDED PRECEDING) AS BIGINT) AS e
      FROM (SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY expires_at, earned_at, lot) AS q
            FROM (SELECT user_id, lot, expires_at, earned_at, available_at, remaining AS size, purchase_id, 0 AS born
                  FROM day_open_lots
                  UNION ALL
                  SELECT user_id, ref, expires_at, ts, available_at, points, purchase_id, n
                  FROM day_timeline WHERE kind = 'earn')))

-- The customers whose day the queue model below cannot run: a day's lot goes before an open one in the queue (the
-- validity was shortened), or a lot becomes usable after one behind it (a moved-in or older lot still pending).
-- Their day runs as a fold over the whole list of lots (DAY_STEPS); both give the same rows where both run.
-- name: day_list_folded
CREATE OR REPLACE TEMP TABLE day_list_folded AS
SELECT DISTINCT user_id
FROM (SELECT user_id, born, q, sum(CASE WHEN born = 0 THEN 1 ELSE 0 END) OVER (PARTITION BY user_id) AS opening,
             greatest(available_at, $day::TIMESTAMP) AS usable,
             max(greatest(available_at, $day::TIMESTAMP)) OVER (PARTITION BY user_id ORDER BY q
                                                                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                 AS usable_before
      FROM day_queue)
WHERE (born = 0 AND q > opening) OR usable < usable_before

-- The steps of the queue model: each event but an earn is a step, and a run of earns is one step (it only pays
-- debts and adds lots at the end of the queue). What a step may reach is an end in the queue (`upto`): a use the
-- lots usable at its time (a prefix of the queue, see DAY_LIST_FOLDED), a clawback or a closure every lot born
-- before it, an expiry the lots expiring by then. A clawback's own lot is [own_s, own_e); a run of earns is at `upto`.
-- name: day_run
CREATE OR REPLACE TEMP TABLE day_run AS
WITH events AS (
    SELECT t.*, coalesce(o.total, 0) + coalesce(sum(CASE WHEN t.kind = 'earn' THEN t.points END) OVER (
               PARTITION BY t.user_id ORDER BY t.n ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS born_end,
           CASE WHEN t.kind = 'earn' AND lag(t.kind) OVER (PARTITION BY t.user_id ORDER BY t.n) = 'earn' THEN 0
                ELSE 1 END AS head
    FROM day_timeline AS t
    LEFT JOIN (SELECT user_id, sum(size) AS total FROM day_queue WHERE born = 0 GROUP BY user_id) AS o
           ON o.user_id = t.user_id
    WHERE t.user_id NOT IN (SELECT user_id FROM day_list_folded)
), usable AS (  -- for each use, the end of the lots usable at its time
    SELECT user_id, n, max(e) OVER (PARTITION BY user_id ORDER BY usable_at, o, key ROWS UNBOUNDED PRECEDING) AS upto, o
    FROM (SELECT user_id, greatest(available_at, $day::TIMESTAMP) AS usable_at, 0 AS o, q AS key, e, NULL AS n FROM day_queue
          UNION ALL
          SELECT user_id, ts, 1, n, NULL, n FROM day_timeline WHERE kind = 'use')
), expiring AS (
    SELECT t.user_id, t.n, max(q.e) AS upto
    FROM day_timeline AS t JOIN day_queue AS q ON q.user_id = t.user_id AND q.expires_at <= t.ts AND q.born = 0
    WHERE t.kind = 'expire' GROUP BY t.user_id, t.n
), own AS (
    SELECT t.user_id, t.n, q.s, q.e
    FROM day_timeline AS t JOIN day_queue AS q ON q.user_id = t.user_id AND q.purchase_id = t.purchase_id AND q.born < t.n
    WHERE t.kind = 'clawback'
), steps AS (
    SELECT *, sum(head) OVER (PARTITION BY user_id ORDER BY n ROWS UNBOUNDED PRECEDING) AS k FROM events
)
SELECT s.user_id, CAST(s.k AS BIGINT) AS k, CAST(min(s.n) AS BIGINT) AS n, min(s.kind) AS kind, min(s.ref) AS ref,
       CAST(coalesce(sum(s.points), 0) AS BIGINT) AS points,
       CAST(min(CASE s.kind WHEN 'use' THEN coalesce(u.upto, 0) WHEN 'expire' THEN x.upto ELSE s.born_end END)
            AS BIGINT) AS upto,
       min(own.s) AS own_s, min(own.e) AS own_e
FROM steps AS s
LEFT JOIN usable AS u ON u.user_id = s.user_id AND u.n = s.n AND u.o = 1
LEFT JOIN expiring AS x ON x.user_id = s.user_id AND x.n = s.n
LEFT JOIN own ON own.user_id = s.user_id AND own.n = s.n
GROUP BY s.user_id, s.k

-- What each step spent from which lot: a use, clawback, expiry or closure all it passed over from p on, but the holes
-- (spent by others), and a clawback its hole in its own lot; and which debts a run of earns paid from which lot.
-- name: day_fold_pieces
CREATE OR REPLACE TEMP TABLE day_fold_pieces AS
WITH holes AS (
    SELECT user_id, own_a AS lo, own_b AS hi FROM day_fold WHERE own_a IS NOT NULL
    UNION ALL SELECT user_id, earns_from, earns_from + paid FROM day_fold WHERE paid > 0
), spans AS (
    SELECT user_id, n, p_from AS lo, p AS hi FROM day_fold WHERE kind <> 'earn' AND p > p_from
), debts AS (
    SELECT user_id, txn_id AS txn, upto - owed AS lo, upto AS hi FROM day_open_debts
    UNION ALL SELECT user_id, ref, dend_from, dend_from + missing FROM day_fold WHERE missing > 0
), paid AS (  -- the part of each lot of a run of earns that paid debts, as places in the debts' queue
    SELECT f.user_id, q.born AS n, f.pd_from + greatest(q.s, f.earns_from) - f.earns_from AS lo,
           f.pd_from + least(q.e, f.earns_from + f.paid) - f.earns_from AS hi
    FROM day_fold AS f JOIN day_queue AS q ON q.user_id = f.user_id AND q.s < f.earns_from + f.paid AND q.e > f.earns_from
    WHERE f.paid > 0
)
SELECT s.user_id, s.n, q.lot, q.expires_at AS lot_expires_at, NULL AS txn,
       CAST(least(s.hi, q.e) - greatest(s.lo, q.s)
            - coalesce(sum(CASE WHEN h.lo IS NOT NULL THEN least(s.hi, q.e, h.hi) - greatest(s.lo, q.s, h.lo) END), 0)
            AS BIGINT) AS points
FROM spans AS s
JOIN day_queue AS q ON q.user_id = s.user_id AND q.s < s.hi AND q.e > s.lo
LEFT JOIN holes AS h ON h.user_id = s.user_id AND h.lo < least(s.hi, q.e) AND h.hi > greatest(s.lo, q.s)
GROUP BY s.user_id, s.n, q.lot, q.expires_at, q.s, q.e, s.lo, s.hi
UNION ALL
SELECT f.user_id, f.n, q.lot, q.expires_at, NULL, f.own_b - f.own_a
FROM day_fold AS f JOIN day_queue AS q ON q.user_id = f.user_id AND q.s <= f.own_a AND f.own_a < q.e
UNION ALL
SELECT p.user_id, p.n, NULL, NULL, d.txn, least(p.hi, d.hi) - greatest(p.lo, d.lo)
FROM paid AS p JOIN debts AS d ON d.user_id = p.user_id AND d.lo < p.hi AND d.hi > p.lo

-- The list fold's start (DAY_STEPS): each customer's events, open lots and debts as lists in fold order. Spark's
-- collect_list keeps no order (sqlglot drops list(... ORDER BY)), so each list is sorted after it is made, on struct
-- fields that lead with a unique key: events by (ts, phase, ref), lots by (expires_at, earned_at, lot), debts by
-- (at, txn).
-- name: day_start
CREATE OR REPLACE TEMP TABLE day_start AS
SELECT user_id, events, coalesce(open.lots, []) AS lots, coalesce(debts.debts, []) AS debts
FROM (SELECT user_id, list_sort(list({'ts': ts, 'phase': phase, 'ref': ref, 'kind': kind, 'points': points,
                                      'purchase_id': purchase_id, 'expires_at': expires_at,
                                      'available_at': available_at})) AS events
      FROM day_timeline WHERE user_id IN (SELECT user_id FROM day_list_folded) GROUP BY user_id)
LEFT JOIN (SELECT user_id, list_sort(list({'expires_at': expires_at, 'earned_at': earned_at, 'lot': lot,
                                           'available_at': available_at, 'remaining': remaining,
                                           'purchase_id': purchase_id})) AS lots
           FROM day_open_lots GROUP BY user_id) AS open USING (user_id)
LEFT JOIN (SELECT user_id, list_sort(list({'at': occurred_at, 'txn': txn_id, 'owed': owed})) AS debts
           FROM day_open_debts GROUP BY user_id) AS debts USING (user_id)

-- The day as a fold over each customer's events, all customers at once: step n applies event n to the open lots
-- and unpaid clawbacks left by step n - 1, and records what it took from which lot (`pieces`), which clawbacks an
-- earn paid (`paid`), and whether a use was refused.
--   expire: what is left of the lots expiring then (a closure: of every lot).
--   earn: pays the unpaid clawbacks first, oldest first; the rest is a new lot.
--   clawback: the purchase's earn, from what is left of its own lot, then from the other lots earliest expiry
--             first (pending or not); what is still missing is owed, and the next earns pay it.
--   use: from the available lots, earliest expiry first; refused when they hold fewer points than asked.
-- name: day_steps
CREATE OR REPLACE TEMP TABLE day_steps AS
WITH RECURSIVE fold AS (
    SELECT user_id, events, 0 AS n, lots, debts, events[0] AS e,
           []::STRUCT(lot VARCHAR, lot_expires_at TIMESTAMP, points BIGINT)[] AS pieces,
           []::STRUCT(txn VARCHAR, points BIGINT)[] AS paid, false AS refused
    FROM day_start
    UNION ALL
    SELECT user_id, events, n,
           list_sort(list_filter(list_transform(lots, lambda l, i: {'expires_at': l.expires_at,
                         'earned_at': l.earned_at, 'lot': l.lot, 'available_at': l.available_at,
                         'remaining': l.remaining - taken[i], 'purchase_id': l.purchase_id}), lambda l: l.remaining > 0)
                     || CASE WHEN kind = 'earn' AND kept > 0
                             THEN [{'expires_at': e.expires_at, 'earned_at': ts, 'lot': e.ref,
                                    'available_at': e.available_at, 'remaining': kept, 'purchase_id': returned}]
                             ELSE [] END),
           list_filter(list_transform(debts, lambda d, i: {'at': d.at, 'txn': d.txn, 'owed': d.owed - repaid[i]}),
                       lambda d: d.owed > 0)
               || CASE WHEN kind = 'clawback' AND points > coalesce(list_sum(taken), 0)
                       THEN [{'at': ts, 'txn': e.ref, 'owed': points - coalesce(list_sum(taken), 0)}] ELSE [] END,
           e,
           list_filter(list_transform(lots, lambda l, i: {'lot': l.lot, 'lot_expires_at': l.expires_at,
                       'points': taken[i]}), lambda p: p.points > 0),
           list_filter(list_transform(debts, lambda d, i: {'txn': d.txn, 'points': repaid[i]}),
                       lambda p: p.points > 0),
           refused
    FROM (  -- what the event takes from each lot, and what an earn pays of each debt
        SELECT *,
               list_transform(lots, lambda l, i: CASE
                   WHEN kind = 'close' OR (kind = 'expire' AND l.expires_at <= ts) THEN l.remaining
                   WHEN kind = 'clawback' AND l.purchase_id = returned THEN from_own
                   ELSE least(drawable[i], greatest(0, wanted - coalesce(list_sum(list_slice(drawable, 1, i - 1)), 0))) END
               ) AS taken,
               list_transform(debts, lambda d, i: CASE WHEN kind = 'earn' THEN least(d.owed, greatest(0,
                   points - coalesce(list_sum(list_transform(list_slice(debts, 1, i - 1), lambda x: x.owed)), 0))) ELSE 0 END
               ) AS repaid,
               points - coalesce(list_sum(list_transform(debts, lambda d: d.owed)), 0) AS kept
        FROM (  -- how much the event wants from the lots in queue order, after its own lot for a clawback
            SELECT *,
                   CASE WHEN kind = 'use' AND NOT refused THEN points WHEN kind = 'clawback' THEN points - from_own
                        ELSE 0 END AS wanted
            FROM (  -- what each lot can give: available ones to a use, the others than its own to a clawback
                SELECT *,
                       kind = 'use' AND coalesce(list_sum(drawable), 0) < points AS refused,
                       CASE WHEN kind = 'clawback' THEN least(points, coalesce(list_sum(list_transform(lots,
                           lambda l: CASE WHEN l.purchase_id = returned THEN l.remaining ELSE 0 END)), 0)) ELSE 0 END
                           AS from_own
                FROM (
                    SELECT *,
                           list_transform(lots, lambda l: CASE
                               WHEN kind = 'use' AND l.available_at <= ts THEN l.remaining
                               WHEN kind = 'clawback' AND l.purchase_id IS DISTINCT FROM returned THEN l.remaining
                               ELSE 0 END) AS drawable
                    FROM (SELECT user_id, events, n + 1 AS n, lots, debts, events[n + 1] AS e,
                                 events[n + 1].kind AS kind, events[n + 1].ts AS ts,
                                 events[n + 1].points AS points, events[n + 1].purchase_id AS returned
                          FROM fold WHERE n < array_length(events))
                )
            )
        )
    )
)
SELECT user_id, n, e, pieces, paid, refused FROM fold WHERE n > 0
UNION ALL  -- the customers of the queue model (DAY_FOLD)
SELECT t.user_id, t.n,
       {'ts': t.ts, 'phase': t.phase, 'ref': t.ref, 'kind': t.kind, 'points': t.points, 'purchase_id': t.purchase_id,
        'expires_at': t.expires_at, 'available_at': t.available_at},
       coalesce(taken.pieces, []), coalesce(paid.paid, []), coalesce(step.refused, false)
FROM day_timeline AS t
LEFT JOIN (SELECT user_id, n, list_sort(list({'lot': lot, 'lot_expires_at': lot_expires_at, 'points': points}))
                  AS pieces
           FROM day_fold_pieces WHERE lot IS NOT NULL AND points > 0 GROUP BY user_id, n) AS taken
       ON taken.user_id = t.user_id AND taken.n = t.n
LEFT JOIN (SELECT user_id, n, list_sort(list({'txn': txn, 'points': points})) AS paid
           FROM day_fold_pieces WHERE txn IS NOT NULL AND points > 0 GROUP BY user_id, n) AS paid
       ON paid.user_id = t.user_id AND paid.n = t.n
LEFT JOIN day_fold AS step ON step.user_id = t.user_id AND step.n = t.n AND step.kind = 'use'
WHERE t.user_id NOT IN (SELECT user_id FROM day_list_folded)
