-- name: ddl
CREATE TABLE IF NOT EXISTS journey.goal_report (
    journey_id VARCHAR NOT NULL, step VARCHAR NOT NULL, arm VARCHAR NOT NULL, entered BIGINT NOT NULL,
    reached_goal BIGINT NOT NULL, conversion_rate DOUBLE, median_days_to_goal DOUBLE, compared_with VARCHAR,
    lift DOUBLE, lift_low DOUBLE, lift_high DOUBLE
);

-- Per journey and arm: the entries into the journey (step '') and into the holdout, and into each branch, variant and
-- control of a decision or A/B test (step: its node); how many of those entries reached the goal, and in how many days
-- from the arm. Lift: the conversion rate's difference from the control of the same step (the A/B test's control; the
-- holdout for the journey), with its 95% interval (two proportions, normal approximation).
-- name: report
INSERT INTO journey.goal_report
WITH located AS (
    SELECT s.journey_id, s.customer_id, s.entry, s.node, s.entered_at, n.kind, n.choice_of, n.position
    FROM journey.journey_state AS s JOIN journey_nodes AS n USING (journey_id, node)
    WHERE s.customer_id NOT IN (SELECT merged_id FROM identity.merges)  -- their rows live on in the merged person
), arms AS (
    SELECT l.journey_id, '' AS step, CASE WHEN l.kind = 'holdout' THEN 'holdout' ELSE 'entered' END AS arm,
           l.position, l.customer_id, l.entry, l.entered_at
    FROM located AS l JOIN journey_rules AS r ON r.journey_id = l.journey_id AND l.node IN (r.first_node, 'holdout')
    UNION ALL
    SELECT journey_id, choice_of, substr(node, length(choice_of) + 2), position, customer_id, entry, entered_at
    FROM located WHERE kind IN ('branch', 'variant', 'control')
), stats AS (
    SELECT a.journey_id, a.step, a.arm, count(*) AS entered, count(g.entered_at) AS reached_goal,
           CAST(count(g.entered_at) AS DOUBLE) / count(*) AS rate,
           median(date_diff('day', a.entered_at, g.entered_at)) AS median_days_to_goal
    FROM arms AS a
    LEFT JOIN located AS g ON g.journey_id = a.journey_id AND g.customer_id = a.customer_id AND g.entry = a.entry
                          AND g.kind = 'goal'
    GROUP BY a.journey_id, a.step, a.arm
), compared AS (
    SELECT s.*, c.arm AS compared_with, s.rate - c.rate AS lift,
           1.96 * sqrt(CAST(s.rate * (1 - s.rate) AS DOUBLE) / s.entered + CAST(c.rate * (1 - c.rate) AS DOUBLE) / c.entered) AS margin
    FROM stats AS s
    LEFT JOIN stats AS c ON c.journey_id = s.journey_id AND c.step = s.step AND c.arm IN ('holdout', 'variant:control')
                        AND c.arm <> s.arm
)
SELECT journey_id, step, arm, entered, reached_goal, rate, median_days_to_goal, compared_with, lift,
       lift - margin, lift + margin
FROM compared
