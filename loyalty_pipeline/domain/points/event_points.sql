-- The day's awards for events (event_rules): each rule's event, by person; a referral on the day its referee's
-- first purchase comes (within the rule's days, the earliest referral of a referee only), to both sides. `once`
-- keeps the first of a member's events of the rule (ever, or in the event's year) and a capped rule pays what is
-- left of the cap in its period, as campaigns do; a rule's criteria judge the member it pays (the referrer). Each award is a lot `event:<type>:<partition>:<offset>` (the
-- referee's: `...:referee`).
-- name: day_event_awards
CREATE OR REPLACE TEMP TABLE day_event_awards AS
WITH referee_ids AS (  -- the person each referee key of the rule's days resolves to now
    SELECT id_value, arg_max(customer_id, linked_on) AS customer_id FROM identity.id_graph
    WHERE strength = 'strong' AND linked_on <= $day
      AND id_value IN (SELECT referee FROM raw.events
                       WHERE type = 'referral' AND NOT tombstone AND day <= $day AND day >= $day - $referral_days)
    GROUP BY id_value
), referrals AS (
    SELECT r.user_id AS referrer_key, coalesce(ids.customer_id, r.referee) AS referee, r.event_ts,
           'event:referral:' || CAST(r.kafka_partition AS VARCHAR) || ':' || CAST(r.kafka_offset AS VARCHAR) AS lot
    FROM raw.events AS r LEFT JOIN referee_ids AS ids ON ids.id_value = r.referee
    WHERE r.type = 'referral' AND NOT r.tombstone AND r.referee IS NOT NULL
      AND r.day <= $day AND r.day >= $day - $referral_days
), first_buys AS (  -- referees whose first purchase ever is today
    SELECT p.user_id, min(p.purchased_at) AS bought_at FROM loyalty.enriched_purchases AS p
    WHERE p.day = $day AND p.user_id IN (SELECT referee FROM referrals)
      AND p.user_id NOT IN (SELECT user_id FROM loyalty.enriched_purchases
                            WHERE day < $day AND user_id IN (SELECT referee FROM referrals))
    GROUP BY p.user_id
), paid_referrals AS (
    SELECT f.user_id AS referee, f.bought_at, x.referrer_key, x.lot, rule.points, rule.referee_points,
           row_number() OVER (PARTITION BY f.user_id ORDER BY x.event_ts, x.lot) AS nth
    FROM first_buys AS f JOIN referrals AS x ON x.referee = f.user_id
    JOIN event_rules AS rule ON rule.type = 'referral'
    WHERE x.event_ts <= f.bought_at AND f.bought_at < x.event_ts + rule.within_days * INTERVAL 1 DAY
), referrer_ids AS (
    SELECT id_value, arg_max(customer_id, linked_on) AS customer_id FROM identity.id_graph
    WHERE strength = 'strong' AND linked_on <= $day
      AND id_value IN (SELECT referrer_key FROM paid_referrals WHERE nth = 1)
    GROUP BY id_value
), awards AS (
    SELECT e.user_id, 'event:' || e.type || ':' || CAST(e.kafka_partition AS VARCHAR) || ':'
               || CAST(e.kafka_offset AS VARCHAR) AS lot,
           e.event_ts AS awarded_at, e.type AS rule, rule.points, true AS counted,
           'events:' || CAST(e.kafka_partition AS VARCHAR) || ':' || CAST(e.kafka_offset AS VARCHAR) AS source_ref
    FROM day_events_by_person AS e JOIN event_rules AS rule ON rule.type = e.type
    WHERE NOT e.tombstone AND e.type <> 'referral'
    UNION ALL
    SELECT coalesce(ids.customer_id, p.referrer_key), p.lot, p.bought_at, 'referral', p.points, true,
           'events' || substr(p.lot, 15)
    FROM paid_referrals AS p LEFT JOIN referrer_ids AS ids ON ids.id_value = p.referrer_key WHERE p.nth = 1
    UNION ALL  -- the referee's side: neither once nor the cap counts it
    SELECT p.referee, p.lot || ':referee', p.bought_at, 'referral', p.referee_points, false, 'events' || substr(p.lot, 15)
    FROM paid_referrals AS p WHERE p.nth = 1 AND p.referee_points > 0
), earlier AS (  -- the members' awards of these rules on earlier days (the referee side apart)
    SELECT t.user_id, rule.type AS rule, t.occurred_at, t.day, t.points
    FROM points.point_transactions AS t JOIN event_rules AS rule ON starts_with(t.txn_id, 'event:' || rule.type || ':')
    WHERE t.kind = 'earn' AND t.day < $day AND t.day >= $earliest AND NOT ends_with(t.txn_id, ':referee')
      AND t.user_id IN (SELECT user_id FROM awards)
), kept AS (
    SELECT a.*, rule.cap_points, rule.cap_from
    FROM (SELECT *, row_number() OVER (PARTITION BY user_id, rule, counted, year(awarded_at) ORDER BY awarded_at, lot) AS nth_in_year,
                 row_number() OVER (PARTITION BY user_id, rule, counted ORDER BY awarded_at, lot) AS nth
          FROM awards) AS a
    JOIN event_rules AS rule ON rule.type = a.rule
    LEFT JOIN criteria_met AS met ON met.kind = 'event' AND met.id = a.rule AND met.user_id = a.user_id
    WHERE (NOT a.counted OR NOT rule.has_criteria OR met.user_id IS NOT NULL)
      AND (NOT a.counted OR rule.once IS NULL
       OR (rule.once = 'ever' AND a.nth = 1
           AND NOT EXISTS (SELECT 1 FROM earlier AS e WHERE e.user_id = a.user_id AND e.rule = a.rule))
       OR (rule.once = 'per_year' AND a.nth_in_year = 1
           AND NOT EXISTS (SELECT 1 FROM earlier AS e WHERE e.user_id = a.user_id AND e.rule = a.rule
                                                       AND year(e.occurred_at) = year(a.awarded_at))))
), running AS (
    SELECT kept.*, coalesce((SELECT sum(e.points) FROM earlier AS e
                             WHERE e.user_id = kept.user_id AND e.rule = kept.rule
                               AND (kept.cap_from IS NULL OR e.day >= kept.cap_from)), 0)
                   + coalesce(sum(kept.points) OVER (PARTITION BY kept.user_id, kept.rule, kept.counted
                                                     ORDER BY kept.awarded_at, kept.lot
                                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS used
    FROM kept
)
SELECT lot, user_id, awarded_at, source_ref,
       CAST(CASE WHEN cap_points IS NULL OR NOT counted THEN points
                 ELSE greatest(0, least(points, cap_points - used)) END AS BIGINT) AS paid
FROM running
