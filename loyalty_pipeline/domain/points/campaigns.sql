-- The day's purchases with the tier held before each (a change at its instant counts from the next purchase) and
-- its earn multiplier: what the earn and the campaigns' awards are computed from.
-- name: day_bought
CREATE OR REPLACE TEMP TABLE day_bought AS
SELECT p.purchase_id, p.user_id, p.product_id, p.category, p.price, p.purchased_at,
       coalesce(held.tier, (SELECT name FROM tier_levels WHERE rank = 0)) AS tier,
       coalesce(level.earn_multiplier, 1) AS earn_multiplier
FROM loyalty.enriched_purchases AS p
LEFT JOIN loyalty.tier_history AS held
       ON held.user_id = p.user_id AND held.valid_from < p.purchased_at
      AND (held.valid_until IS NULL OR held.valid_until >= p.purchased_at)
LEFT JOIN tier_levels AS level ON level.name = held.tier
WHERE p.day = $day

-- Each campaign's award on each purchase it applies to: in its dates, weekdays and hours (UTC), by a member its
-- criteria accept (criteria_met), and holding each of its target kinds (products, categories, tiers, days) it names. Of the `highest` campaigns on a purchase only
-- the largest award is paid (then the first id); `sum` ones are all paid. A capped campaign pays each member, in
-- purchase order, what is left of the cap in the cap's period (its earlier days' awards counted): the award that
-- reaches the cap is cut, the next ones are 0 and write nothing.
-- name: day_bonuses
CREATE OR REPLACE TEMP TABLE day_bonuses AS
WITH candidates AS (
    SELECT b.*, c.id AS campaign, c.cap_points, c.stacking, c.kinds_required, c.from_day, c.cap_from,
           CAST(coalesce(c.bonus_points, floor(CAST(b.price * $earn_rate::DECIMAL(18,6) AS DECIMAL(38,8))
                                               * (c.multiplier - 1))) AS BIGINT) AS award
    FROM day_bought AS b CROSS JOIN campaign_rules AS c
    LEFT JOIN criteria_met AS met ON met.kind = 'campaign' AND met.id = c.id AND met.user_id = b.user_id
    WHERE b.price IS NOT NULL AND (NOT c.has_criteria OR met.user_id IS NOT NULL)
      AND (c.from_day IS NULL OR $day >= c.from_day) AND (c.until_day IS NULL OR $day <= c.until_day)
      AND (c.hour_from IS NULL OR (hour(b.purchased_at) >= c.hour_from AND hour(b.purchased_at) < c.hour_to))
), matched AS (
    SELECT m.purchase_id, m.campaign, count(DISTINCT t.kind) AS kinds
    FROM candidates AS m JOIN campaign_targets AS t
      ON t.id = m.campaign AND ((t.kind = 'product' AND t.value = m.product_id)
                                OR (t.kind = 'category' AND t.value = m.category)
                                OR (t.kind = 'tier' AND t.value = m.tier)
                                OR (t.kind = 'day' AND t.value = $weekday))
    GROUP BY m.purchase_id, m.campaign
), kept AS (
    SELECT c.*, row_number() OVER (PARTITION BY c.purchase_id, c.stacking ORDER BY c.award DESC, c.campaign) AS place
    FROM candidates AS c LEFT JOIN matched AS m ON m.purchase_id = c.purchase_id AND m.campaign = c.campaign
    WHERE coalesce(m.kinds, 0) = c.kinds_required AND c.award > 0
), paid_before AS (
    SELECT k.user_id, k.campaign, sum(t.points) AS points
    FROM (SELECT DISTINCT user_id, campaign, cap_from, from_day FROM kept WHERE cap_points IS NOT NULL) AS k
    JOIN points.point_transactions AS t
      ON t.user_id = k.user_id AND t.kind = 'earn' AND starts_with(t.txn_id, 'bonus:' || k.campaign || ':')
     AND t.day < $day AND t.day >= coalesce(k.cap_from, k.from_day, DATE '1970-01-01')  -- the cap's days only
    GROUP BY k.user_id, k.campaign
), running AS (
    SELECT kept.*, coalesce(b.points, 0) + coalesce(sum(kept.award) OVER (
               PARTITION BY kept.user_id, kept.campaign ORDER BY kept.purchased_at, kept.purchase_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS used
    FROM kept LEFT JOIN paid_before AS b ON b.user_id = kept.user_id AND b.campaign = kept.campaign
    WHERE kept.stacking = 'sum' OR kept.place = 1
)
SELECT 'bonus:' || campaign || ':' || purchase_id AS lot, user_id, purchased_at, purchase_id, campaign,
       CAST(CASE WHEN cap_points IS NULL THEN award ELSE greatest(0, least(award, cap_points - used)) END AS BIGINT)
           AS paid
FROM running
