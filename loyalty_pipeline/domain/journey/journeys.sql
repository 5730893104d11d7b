-- name: ddl
CREATE SCHEMA IF NOT EXISTS journey;
CREATE TABLE IF NOT EXISTS journey.journey_state (
    journey_id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, node VARCHAR NOT NULL, entered_at DATE NOT NULL
);
-- the day a row came from merging two profiles (identity.merges): it carries the earlier profile's date
ALTER TABLE journey.journey_state ADD COLUMN IF NOT EXISTS merged_on DATE;
CREATE TABLE IF NOT EXISTS journey.journey_days (day DATE PRIMARY KEY);
-- the activation steps each day's moves reached, by the profile that reached them: a fact of that day, which a later
-- merge (replacing the person's node with the merged profile's earlier date) does not undo
CREATE TABLE IF NOT EXISTS journey.reached_activations (
    journey_id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, activation VARCHAR NOT NULL, day DATE NOT NULL
);
CREATE TABLE IF NOT EXISTS journey.profile_totals (
    user_id VARCHAR, known BOOLEAN, total_spend DECIMAL(18,2), purchase_count BIGINT, priced_count BIGINT,
    first_purchase_at TIMESTAMP, last_purchase_at TIMESTAMP, products_purchased VARCHAR[], points_balance BIGINT,
    activity VARCHAR[]
);
CREATE TABLE IF NOT EXISTS journey.profile_totals_as_of (as_of DATE);  -- the day the kept totals are as of (no row: none)

-- 1. enter: audience EXCEPT goal EXCEPT everyone who ever entered.
-- name: enter
INSERT INTO today
SELECT entering.journey_id, entering.customer_id, 'stage:' || first.stage_id, $day
FROM (
    SELECT journey_id, customer_id FROM hits WHERE criterion = 'audience'
    EXCEPT SELECT journey_id, customer_id FROM hits WHERE criterion = 'goal'
    EXCEPT SELECT journey_id, customer_id FROM base
) AS entering
JOIN journey_stages AS first ON first.journey_id = entering.journey_id AND first.stage_index = 0

-- 2. goal: in-journey customers INTERSECT the goal's audience.
-- name: goal
INSERT INTO today
SELECT journey_id, customer_id, 'goal', $day FROM (
    SELECT journey_id, customer_id FROM journey_positions
    INTERSECT SELECT journey_id, customer_id FROM hits WHERE criterion = 'goal'
)

-- 3. exit: the first exit criterion (in listed order) of the customer's current stage that holds.
-- name: exit
INSERT INTO today
SELECT p.journey_id, p.customer_id, arg_min('stage:' || s.stage_id || ':exit:' || e.exit_name, e.exit_order), $day
FROM journey_positions AS p
JOIN hits AS h ON h.criterion = 'exit' AND h.journey_id = p.journey_id AND h.customer_id = p.customer_id
              AND h.stage_index = p.stage_index
JOIN journey_exits AS e ON e.journey_id = h.journey_id AND e.stage_index = h.stage_index AND e.exit_order = h.exit_order
JOIN journey_stages AS s ON s.journey_id = p.journey_id AND s.stage_index = p.stage_index
GROUP BY p.journey_id, p.customer_id

-- 4-5. one round of moves: a stage's first step; a completed step's successor; a completed stage's next stage
-- (the day its entry holds) or the end. Repeated until a round moves nobody.
-- name: advance
INSERT INTO today
SELECT p.journey_id, p.customer_id,
       CASE WHEN p.step_index < stage.step_count THEN 'stage:' || stage.stage_id || ':step:' || (p.step_index + 1)
            WHEN next.stage_id IS NOT NULL THEN 'stage:' || next.stage_id
            ELSE 'end' END,
       $day
FROM journey_positions AS p
JOIN journey_stages AS stage USING (journey_id, stage_index)
LEFT JOIN journey_nodes AS step
       ON step.journey_id = p.journey_id AND step.kind = 'step' AND step.stage_index = p.stage_index
      AND step.step_index = p.step_index
LEFT JOIN journey_stages AS next ON next.journey_id = p.journey_id AND next.stage_index = p.stage_index + 1
WHERE (p.step_index = 0 OR step.activation IS NOT NULL OR p.step_entered_at + step.wait_days <= $day)
  AND (p.step_index < stage.step_count OR next.stage_id IS NULL OR NOT next.has_entry
       OR EXISTS (SELECT 1 FROM hits AS h WHERE h.criterion = 'entry' AND h.journey_id = p.journey_id
                  AND h.customer_id = p.customer_id AND h.stage_index = next.stage_index))

-- The state before the day, by person: a profile merged into another on the day (identity.merges) shows as that
-- person, whose first day per node is the earlier of the two; profiles merged on earlier days are gone.
-- name: base
CREATE OR REPLACE TEMP TABLE base AS
SELECT s.journey_id, coalesce(m.into_id, s.customer_id) AS customer_id, s.node, min(s.entered_at) AS entered_at
FROM journey.journey_state AS s
LEFT JOIN (SELECT merged_id, into_id FROM identity.merges WHERE day = $day) AS m ON m.merged_id = s.customer_id
WHERE s.entered_at < $day AND (s.merged_on IS NULL OR s.merged_on < $day)
  AND s.customer_id NOT IN (SELECT merged_id FROM identity.merges WHERE day < $day)
GROUP BY ALL

-- The rows a day's merges give the person they merged into: the nodes the merged profile reached first.
-- name: merged_rows
CREATE OR REPLACE TEMP TABLE merged_rows AS
SELECT b.* FROM base AS b
WHERE b.customer_id IN (SELECT into_id FROM identity.merges WHERE day = $day)
  AND NOT EXISTS (SELECT 1 FROM journey.journey_state AS own
                  WHERE own.journey_id = b.journey_id AND own.customer_id = b.customer_id AND own.node = b.node
                    AND own.entered_at = b.entered_at AND own.entered_at < $day)

-- The people of a day's state rows and activations reached (the change log, touched.py): those the day replaces and
-- its new ones (today's moves, a merge's rows; a merge's rows replacing later ones are the merged-into person's).
-- One statement before the writes: Spark cannot read the log or the state back within the transaction.
-- name: day_people
SELECT customer_id AS person FROM journey.journey_state WHERE (entered_at = $day AND merged_on IS NULL) OR merged_on = $day
UNION ALL SELECT customer_id FROM journey.reached_activations WHERE day = $day
UNION ALL SELECT customer_id FROM today UNION ALL SELECT customer_id FROM merged_rows

-- A run rebuilding from a day on drops the rows from that day ($1): their people.
-- name: people_from
SELECT customer_id AS person FROM journey.journey_state WHERE entered_at >= $1 OR merged_on >= $1
UNION ALL SELECT customer_id FROM journey.reached_activations WHERE day >= $1
