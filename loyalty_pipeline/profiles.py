"""The customer profile as of the end of a day, in SQL: the columns journeys' criteria read, and the 360 view.

`$as_of` is the day: only events up to its end count, so a backfill sees each day as it was.
"""

# Everyone known by the end of the day, with the behaviour columns of SPEC §5.4.
BEHAVIOUR = """
WITH known AS (
    SELECT user_id FROM raw.users WHERE day <= $as_of
    UNION SELECT user_id FROM raw.customers
    UNION SELECT user_id FROM loyalty.enriched_purchases WHERE day <= $as_of
), spend AS (
    SELECT user_id,
           coalesce(sum(price), 0)::DECIMAL(18,2) AS total_spend,
           count(*) AS purchase_count,
           avg(price)::DECIMAL(18,2) AS avg_purchase_price,
           min(purchased_at) AS first_purchase_at,
           max(purchased_at) AS last_purchase_at,
           list_sort(list_distinct(list(product_id))) AS products_purchased
    FROM loyalty.enriched_purchases WHERE day <= $as_of GROUP BY user_id
), points AS (
    SELECT user_id, sum(points)::BIGINT AS points_balance FROM points.point_transactions
    WHERE day <= $as_of GROUP BY user_id
), activity AS (
    SELECT clicks.user_id, list_sort(list_distinct(list(clicks.product_id))) AS products
    FROM raw.user_activity AS clicks LEFT JOIN spend USING (user_id)
    WHERE clicks.day <= $as_of AND clicks.event_type IN ('view', 'add_to_cart') AND NOT clicks.tombstone
      AND (spend.last_purchase_at IS NULL OR clicks.event_ts > spend.last_purchase_at)
    GROUP BY clicks.user_id
)
SELECT known.user_id,
       coalesce(spend.total_spend, 0)::DECIMAL(18,2) AS total_spend,
       coalesce(spend.purchase_count, 0) AS purchase_count,
       spend.avg_purchase_price, spend.first_purchase_at, spend.last_purchase_at,
       $as_of::DATE - spend.last_purchase_at::DATE AS days_since_last_purchase,
       coalesce((SELECT arg_max(tiers.name, tiers.above) FROM tiers WHERE coalesce(spend.total_spend, 0) > tiers.above),
                $default_tier) AS reward_level,
       coalesce(points.points_balance, 0) AS points_balance,
       coalesce(spend.products_purchased, []::VARCHAR[]) AS products_purchased,
       coalesce(activity.products, []::VARCHAR[]) AS activity_since_last_purchase
FROM known
LEFT JOIN spend USING (user_id)
LEFT JOIN points USING (user_id)
LEFT JOIN activity USING (user_id)
"""

# Identity: the latest Kafka users message wins over the CSV export, field by field; newest first in each.
IDENTITY = """
WITH kafka AS (
    SELECT user_id, name, email, tombstone AS account_closed FROM raw.users WHERE day <= $as_of
    QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY event_ts DESC, kafka_offset DESC) = 1
), export AS (
    SELECT user_id, name, email, signup_date FROM raw.customers
    QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY s3_key DESC, row_no DESC) = 1
)
SELECT user_id,
       coalesce(kafka.name, export.name) AS name,
       coalesce(kafka.email, export.email) AS email,
       export.signup_date,
       coalesce(kafka.account_closed, false) AS account_closed
FROM kafka FULL JOIN export USING (user_id)
"""

PROFILE_360 = f"""
SELECT behaviour.user_id, identity.name, identity.email, behaviour.total_spend, behaviour.purchase_count,
       behaviour.avg_purchase_price, behaviour.first_purchase_at, behaviour.last_purchase_at,
       behaviour.days_since_last_purchase, behaviour.reward_level, behaviour.points_balance,
       behaviour.products_purchased, behaviour.activity_since_last_purchase,
       coalesce(offers.promotions, []::VARCHAR[]) AS promotions,
       identity.signup_date, coalesce(identity.account_closed, false) AS account_closed, $as_of::DATE AS as_of
FROM ({BEHAVIOUR}) AS behaviour
LEFT JOIN ({IDENTITY}) AS identity USING (user_id)
LEFT JOIN (SELECT user_id, list_sort(list(promotion_name)) AS promotions FROM loyalty.promotions GROUP BY user_id) AS offers
       USING (user_id)
"""
