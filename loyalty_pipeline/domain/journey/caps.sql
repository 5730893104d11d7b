-- name: ddl
CREATE TABLE IF NOT EXISTS journey.capped_activations (  -- reached but not delivered: over a frequency cap
    journey_id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, activation VARCHAR NOT NULL, day DATE NOT NULL,
    reason VARCHAR NOT NULL  -- max_per_day | max_per_week
);

-- One day of the window: its reached activations ranked per customer (journeys in the order written, then
-- activation), each kept while the customer's day and 7 days (this one and the 6 before, delivered ones) are under
-- the caps. A cap not set is NULL.
-- name: decide_day
INSERT INTO decided
WITH ranked AS (
    SELECT a.journey_id, a.customer_id, a.activation, a.day,
           row_number() OVER (PARTITION BY a.customer_id ORDER BY r.journey_order, a.activation, a.journey_id) AS n
    FROM journey.reached_activations AS a JOIN journey_rules AS r USING (journey_id)
    WHERE a.day = $day
), week AS (
    SELECT customer_id, count(*) AS sent FROM (
        SELECT customer_id FROM journey.activations WHERE activated_on >= $week_start AND activated_on < $first
        UNION ALL
        SELECT customer_id FROM decided WHERE reason IS NULL AND activated_on >= $week_start AND activated_on < $day
    ) AS delivered
    GROUP BY customer_id
)
SELECT r.journey_id, r.customer_id, r.activation, r.day,
       CASE WHEN r.n > $per_day THEN 'max_per_day' WHEN coalesce(w.sent, 0) + r.n > $per_week THEN 'max_per_week' END
FROM ranked AS r LEFT JOIN week AS w USING (customer_id)
