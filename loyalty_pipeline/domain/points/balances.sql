-- Whom a ledger day changed a balance of: people with rows on the day, and with lots that become usable or expire
-- at its end (no row says so; `next_expiry_*` and `pending` move with the calendar).
-- name: ledger_day_people
SELECT user_id AS person FROM points.point_transactions
WHERE day = $day
   OR (kind IN ('earn', 'merge') AND points > 0
       AND (available_at >= $day AND available_at < $day + 1 OR expires_at >= $day AND expires_at <= $day + 1))
