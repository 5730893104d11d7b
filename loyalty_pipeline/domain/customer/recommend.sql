-- name: ddl
CREATE SCHEMA IF NOT EXISTS customer;
CREATE TABLE IF NOT EXISTS customer.rec_baskets (order_id VARCHAR, user_id VARCHAR, items VARCHAR[]);
CREATE TABLE IF NOT EXISTS customer.rec_large_baskets (order_id VARCHAR, user_id VARCHAR, items VARCHAR[]);
CREATE TABLE IF NOT EXISTS customer.rec_counts (itemset VARCHAR[], product_id VARCHAR, orders INTEGER);
