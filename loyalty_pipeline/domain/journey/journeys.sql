-- name: ddl
CREATE SCHEMA IF NOT EXISTS journey;
CREATE TABLE IF NOT EXISTS journey.journey_state (
    journey_id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, node VARCHAR NOT NULL, entered_at DATE NOT NULL
);
-- the day a row came from merging two profiles (identity.merges): it carries the earlier profile's date
ALTER TABLE journey.journey_state ADD COLUMN IF NOT EXISTS merged_on DATE;
-- the customer's entry into the journey (1, 2, ...: reentry), a state made before it holds first entries
ALTER TABLE journey.journey_state ADD COLUMN IF NOT EXISTS entry INTEGER DEFAULT 1;
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

-- Each (journey, customer)'s last entry before the day: its number, the day it ended (NULL: open) and whether any
-- entry reached the goal; what re-entry is decided on.
-- name: base_entries
CREATE OR REPLACE TEMP TABLE base_entries AS
WITH located AS (
    SELECT b.journey_id, b.customer_id, b.entry, b.entered_at, n.kind FROM base AS b JOIN journey_nodes AS n USING (journey_id, node)
), last AS (
    SELECT journey_id, customer_id, max(entry) AS entry, max(CASE WHEN kind = 'goal' THEN 1 ELSE 0 END) AS ever_goal
    FROM located GROUP BY journey_id, customer_id
)
SELECT last.journey_id, last.customer_id, last.entry, last.ever_goal,
       min(CASE WHEN l.kind IN ('goal', 'exit', 'end') THEN l.entered_at END) AS ended_on
FROM last JOIN located AS l ON l.journey_id = last.journey_id AND l.customer_id = last.customer_id AND l.entry = last.entry
GROUP BY last.journey_id, last.customer_id, last.entry, last.ever_goal

-- 1. enter: audience EXCEPT goal EXCEPT those whose last entry is open or bars a new one (reentry: none, any entry;
-- unless_goal, an entry that reached the goal; both others, one ended less than after_days ago). A holdout's
-- bucket (the first 4 hex digits of md5(journey|holdout|person|salt), as the A/B test's) never enters a stage.
-- name: enter
INSERT INTO today
SELECT a.journey_id, a.customer_id, coalesce(e.entry, 0) + 1,
       CASE WHEN substr(md5(a.journey_id || '|holdout|' || a.customer_id || '|' || j.salt), 1, 4) < j.holdout_below
            THEN 'holdout' ELSE j.first_node END,
       $day
FROM (
    SELECT journey_id, customer_id FROM hits WHERE criterion = 'audience'
    EXCEPT SELECT journey_id, customer_id FROM hits WHERE criterion = 'goal'
) AS a
JOIN journey_rules AS j USING (journey_id)
LEFT JOIN base_entries AS e USING (journey_id, customer_id)
WHERE e.entry IS NULL
   OR (e.ended_on IS NOT NULL AND j.reentry <> 'none' AND NOT (j.reentry = 'unless_goal' AND e.ever_goal = 1)
       AND e.ended_on + j.after_days <= $day)

-- 2. goal: in-journey customers INTERSECT the goal's audience.
-- name: goal
INSERT INTO today
SELECT p.journey_id, p.customer_id, p.entry, 'goal', $day
FROM journey_positions AS p
JOIN (
    SELECT journey_id, customer_id FROM journey_positions
    INTERSECT SELECT journey_id, customer_id FROM hits WHERE criterion = 'goal'
) AS reached ON reached.journey_id = p.journey_id AND reached.customer_id = p.customer_id

-- 3. exit: the first exit criterion (in listed order) of the customer's current stage that holds.
-- name: exit
INSERT INTO today
SELECT p.journey_id, p.customer_id, p.entry, arg_min(e.node, e.exit_order), $day
FROM journey_positions AS p
JOIN journey_exits AS e ON e.journey_id = p.journey_id AND e.stage_index = p.stage_index
JOIN hits AS h ON h.journey_id = e.journey_id AND h.criterion = e.criterion AND h.customer_id = p.customer_id
GROUP BY p.journey_id, p.customer_id, p.entry

-- 4-5. one round of moves from each customer's current node to its successor, when the node is complete (a wait:
-- wait_days after it was entered; wait_until: its criterion holds or max_days passed; any other: at once) and the
-- successor's gate holds (a stage's entry criterion, the first day it holds). Decisions and A/B tests choose
-- their successor below. Repeated until a round moves nobody.
-- name: advance
INSERT INTO today
SELECT p.journey_id, p.customer_id, p.entry, n.next_node, $day
FROM journey_positions AS p
JOIN journey_nodes AS n ON n.journey_id = p.journey_id AND n.node = p.node
WHERE n.next_node IS NOT NULL
  AND (n.wait_days IS NULL OR p.entered_at + n.wait_days <= $day)
  AND (n.kind <> 'wait_until' OR p.entered_at + n.max_days <= $day
       OR EXISTS (SELECT 1 FROM hits AS h WHERE h.journey_id = p.journey_id AND h.criterion = n.criterion
                  AND h.customer_id = p.customer_id))
  AND (n.next_gate IS NULL
       OR EXISTS (SELECT 1 FROM hits AS h WHERE h.journey_id = p.journey_id AND h.criterion = n.next_gate
                  AND h.customer_id = p.customer_id))

-- A decision: its first branch (in listed order) whose `when` holds, else its else branch; with neither, the
-- customer waits at the decision, and exits as no_branch once max_wait_days have passed.
-- name: decide
INSERT INTO today
WITH deciding AS (
    SELECT p.journey_id, p.customer_id, p.entry, p.entered_at, d.node, d.max_days
    FROM journey_positions AS p
    JOIN journey_nodes AS d ON d.journey_id = p.journey_id AND d.node = p.node AND d.kind = 'decision'
), chosen AS (
    SELECT g.journey_id, g.customer_id, arg_min(b.node, b.choice_order) AS branch
    FROM deciding AS g
    JOIN journey_nodes AS b ON b.journey_id = g.journey_id AND b.choice_of = g.node AND b.kind = 'branch'
    LEFT JOIN hits AS h ON h.journey_id = b.journey_id AND h.criterion = b.criterion AND h.customer_id = g.customer_id
    WHERE b.criterion IS NULL OR h.customer_id IS NOT NULL
    GROUP BY g.journey_id, g.customer_id
)
SELECT g.journey_id, g.customer_id, g.entry, coalesce(c.branch, g.node || ':no_branch'), $day
FROM deciding AS g LEFT JOIN chosen AS c USING (journey_id, customer_id)
WHERE c.branch IS NOT NULL OR g.entered_at + g.max_days <= $day

-- An A/B test: the variant (or control) whose range holds the customer's bucket, the first 4 hex digits of
-- md5(journey|step|person|salt) compared as text (fixed-width hex sorts as its number, on every engine).
-- name: assign
INSERT INTO today
SELECT p.journey_id, p.customer_id, p.entry, v.node, $day
FROM journey_positions AS p
JOIN journey_nodes AS t ON t.journey_id = p.journey_id AND t.node = p.node AND t.kind = 'ab_test'
JOIN journey_nodes AS v ON v.journey_id = t.journey_id AND v.choice_of = t.node
WHERE substr(md5(p.journey_id || '|' || t.node || '|' || p.customer_id || '|' || t.salt), 1, 4) >= v.bucket_from
  AND (v.bucket_below IS NULL
       OR substr(md5(p.journey_id || '|' || t.node || '|' || p.customer_id || '|' || t.salt), 1, 4) < v.bucket_below)

-- The state before the day, by person: a profile merged into another on the day (identity.merges) shows as that
-- person, whose first day per node is the earlier of the two; profiles merged on earlier days are gone. Of two
-- arms of one choice the two profiles took (a decision's branches or no_branch, an A/B test's variants, an entry's
-- holdout or first stage), the person keeps the earlier (then the first listed), and that arm's nodes only.
-- name: base
CREATE OR REPLACE TEMP TABLE base AS
WITH united AS (
    SELECT s.journey_id, coalesce(m.into_id, s.customer_id) AS customer_id, s.entry, s.node, min(s.entered_at) AS entered_at
    FROM journey.journey_state AS s
    LEFT JOIN (SELECT merged_id, into_id FROM identity.merges WHERE day = $day) AS m ON m.merged_id = s.customer_id
    WHERE s.entered_at < $day AND (s.merged_on IS NULL OR s.merged_on < $day)
      AND s.customer_id NOT IN (SELECT merged_id FROM identity.merges WHERE day < $day)
    GROUP BY ALL
), arms AS (
    SELECT u.journey_id, u.customer_id, u.entry, u.node, u.entered_at, n.kind, n.choice_of, n.choice_order
    FROM united AS u JOIN journey_nodes AS n USING (journey_id, node)
    WHERE n.choice_of IS NOT NULL AND u.customer_id IN (SELECT into_id FROM identity.merges WHERE day = $day)
), dropped AS (
    SELECT a.* FROM arms AS a JOIN arms AS other
        ON other.journey_id = a.journey_id AND other.customer_id = a.customer_id AND other.entry = a.entry
       AND other.choice_of = a.choice_of
       AND (other.entered_at < a.entered_at OR (other.entered_at = a.entered_at AND other.choice_order < a.choice_order))
)
SELECT * FROM united AS u
WHERE NOT EXISTS (SELECT 1 FROM dropped AS d WHERE d.journey_id = u.journey_id AND d.customer_id = u.customer_id
                  AND d.entry = u.entry AND (u.node = d.node OR starts_with(u.node, d.node || ':')
                                             OR (d.kind = 'stage' AND u.node NOT IN ('holdout', 'goal'))))

-- The rows a day's merges give the person they merged into: the nodes the merged profile reached first.
-- name: merged_rows
CREATE OR REPLACE TEMP TABLE merged_rows AS
SELECT b.* FROM base AS b
WHERE b.customer_id IN (SELECT into_id FROM identity.merges WHERE day = $day)
  AND NOT EXISTS (SELECT 1 FROM journey.journey_state AS own
                  WHERE own.journey_id = b.journey_id AND own.customer_id = b.customer_id AND own.entry = b.entry
                    AND own.node = b.node
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
