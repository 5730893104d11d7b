-- Every id below is mapped to the person it resolves to at the end of $as_of (identity.ids_as_of), so a profile
-- holds all of a person's events, whichever key or earlier profile they came under.
-- name: ids_in_range
SELECT user_id FROM loyalty.enriched_purchases WHERE day BETWEEN $first AND $last
UNION SELECT user_id FROM points.point_transactions WHERE day BETWEEN $first AND $last
UNION SELECT user_id FROM raw.user_activity WHERE day BETWEEN $first AND $last
UNION SELECT user_id FROM raw.users WHERE day BETWEEN $first AND $last

-- The 360 as its readers see it: the stored profiles with the day they are as of (`customer.profile_as_of`, written
-- with them) and the days since the last purchase counted from it when read, so no row goes stale with the calendar.
-- name: profile_360_view
CREATE OR REPLACE VIEW customer.profile_360 AS
SELECT p.user_id, p.name, p.email, p.total_spend, p.purchase_count, p.avg_purchase_price, p.first_purchase_at,
       p.last_purchase_at, date_diff('day', p.last_purchase_at::DATE, d.as_of) AS days_since_last_purchase,
       p.reward_level, p.points_balance, p.products_purchased, p.activity_since_last_purchase, p.promotions,
       p.signup_date, p.account_closed, d.as_of
FROM customer.profiles AS p CROSS JOIN customer.profile_as_of AS d
