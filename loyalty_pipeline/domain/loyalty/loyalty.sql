-- name: enriched_ddl
CREATE SCHEMA IF NOT EXISTS loyalty;
CREATE TABLE IF NOT EXISTS loyalty.enriched_purchases (
    purchase_id VARCHAR NOT NULL, order_id VARCHAR NOT NULL, user_id VARCHAR NOT NULL, product_id VARCHAR NOT NULL,
    category VARCHAR, price DECIMAL(18,2), purchased_at TIMESTAMP NOT NULL, source VARCHAR NOT NULL,
    store_id VARCHAR, day DATE NOT NULL
);
ALTER TABLE loyalty.enriched_purchases ADD COLUMN IF NOT EXISTS customer_key VARCHAR;
ALTER TABLE loyalty.enriched_purchases ADD COLUMN IF NOT EXISTS returned_at TIMESTAMP;  -- NULL: not returned

-- The buyers of the window's purchases and of the purchases its returns take back (run before and after a rebuild).
-- name: window_people
SELECT user_id AS person FROM loyalty.enriched_purchases WHERE day >= $first AND day < $end
UNION ALL SELECT user_id FROM loyalty.returns WHERE day >= $first AND day < $end
