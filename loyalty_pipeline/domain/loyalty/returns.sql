-- name: ddl
CREATE SCHEMA IF NOT EXISTS loyalty;
CREATE TABLE IF NOT EXISTS loyalty.returns (  -- accepted returns: one per returned purchase
    return_id VARCHAR NOT NULL,    -- returns:<partition>:<offset> (Kafka) or s3:<key>:<row> (S3)
    purchase_id VARCHAR NOT NULL,
    user_id VARCHAR NOT NULL,      -- the buyer (enriched_purchases.user_id)
    returned_at TIMESTAMP NOT NULL,
    day DATE NOT NULL
);

-- The window's returns, each with its turn among the returns of the same order's product (the named purchase's, for
-- a return by id): in return-time order, then message order. A turn sees what the turns before it took back.
-- name: asked
CREATE OR REPLACE TEMP TABLE asked_returns AS
WITH asked AS (
    SELECT 'returns:' || kafka_partition || ':' || kafka_offset AS return_id, user_id AS customer_key,
           purchase_id, order_id, product_id, event_ts AS returned_at, day, location, {kafka_json} AS raw,
           kafka_partition, kafka_offset, NULL::VARCHAR AS s3_key, NULL::BIGINT AS row_no
    FROM raw.returns AS r WHERE NOT tombstone AND day >= $first AND day < $end
    UNION ALL  -- the S3 export names no customer: a return of another customer's purchase cannot be told there
    SELECT 's3:' || s3_key || ':' || row_no, NULL, purchase_id, order_id, product_id, returned_at, day, location,
           {s3_json}, NULL, NULL, s3_key, row_no
    FROM raw.s3_returns AS r WHERE day >= $first AND day < $end
)
SELECT asked.*, named.purchase_id IS NOT NULL AS named_known,
       CASE WHEN coalesce(named.order_id, asked.order_id) IS NULL THEN 1  -- an unknown purchase: nothing to share
            ELSE row_number() OVER (
                PARTITION BY coalesce(named.order_id, asked.order_id), coalesce(named.product_id, asked.product_id)
                ORDER BY asked.returned_at, kafka_partition, kafka_offset, s3_key, row_no) END AS turn
FROM asked LEFT JOIN loyalty.enriched_purchases AS named ON named.purchase_id = asked.purchase_id
