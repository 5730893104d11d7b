"""The honest lower bound: the core loyalty tables in hand-written DuckDB SQL, one connection, no Dagster.

Reads the same inputs as the pipeline (SPEC §3: `kafka/<topic>/*.jsonl[.gz]`, `s3/...csv`, `loyalty.yaml`) and
computes, set-based and in one pass each:

* raw purchases and products, deduplicated by (partition, offset) (at-least-once copies of a coordinate are
  identical, so any one is kept), corrupt lines and invalid payloads dropped;
* enriched purchases: Kafka purchases with the product's price and category as of the event time (ASOF JOIN on
  the latest products message with ts <= the purchase's, greatest offset at one instant; a tombstone or unknown
  product gives NULL), plus the S3 historical rows with their own price (rows not on the file's date dropped);
* sales_totals (tiers), caffeine_index (stamp card), promotions (the declarative rules of loyalty.yaml);
* profile: one row per known customer (users, customers, purchasers) with identity and spend aggregates.

It does NOT do what the pipeline also does: clickstream and redemptions ingest, quarantine of rejected rows,
point ledger, journeys, recommendations, asset checks, serving copy, run bookkeeping.

    python bench/plain_duckdb.py --data-dir DIR --out results.duckdb

The result tables (sales_totals, caffeine_index, promotions, profile) are written to `--out`.
"""

import argparse
import json
import sys
import time
from decimal import Decimal
from pathlib import Path

import duckdb

from loyalty_pipeline.domain.config import load_rules as read_rules

START_DATE = "2000-01-01"  # the pipeline's first partition: older events are not loaded


def load_rules(data_dir: Path) -> dict:
    """The data dir's loyalty.yaml over the defaults, read as the pipeline reads it (the rules are input, not work)."""
    path = data_dir / "loyalty.yaml"
    return read_rules(path if path.exists() else None).model_dump()


def _files(data_dir: Path, topic: str) -> list[str]:
    folder = data_dir / "kafka" / topic
    return sorted(str(path) for pattern in ("*.jsonl", "*.jsonl.gz") for path in folder.glob(pattern))


def _kafka(topic_files: list[str]) -> str:
    """Envelopes of a topic, one row per (partition, offset); corrupt lines come through all-NULL and are dropped."""
    files = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in topic_files) + "]"
    return f"""
        SELECT "partition" AS kafka_partition, "offset" AS kafka_offset,
               any_value({{'ts': ts, 'key': "key", 'payload': payload}}) AS m
        FROM read_json({files}, format = 'newline_delimited', ignore_errors = true,
                       columns = {{'partition': 'INTEGER', 'offset': 'BIGINT', 'ts': 'BIGINT', 'key': 'VARCHAR',
                                   'payload': 'VARCHAR'}})
        WHERE "partition" IS NOT NULL AND "offset" IS NOT NULL AND ts IS NOT NULL AND "key" IS NOT NULL
          AND ts >= epoch_ms(TIMESTAMP '{START_DATE}')
        GROUP BY ALL
    """


def _string(path: str) -> str:
    return f"CASE WHEN json_type(j, '{path}') = 'VARCHAR' THEN j ->> '{path}' END"


def build(conn: duckdb.DuckDBPyConnection, data_dir: Path, rules: dict) -> dict[str, float]:
    """All tables into `conn` (in memory); returns seconds per step."""
    timings = {}

    def step(name: str, sql: str, params=None):
        started = time.perf_counter()
        conn.execute(sql, params or {})
        timings[name] = round(time.perf_counter() - started, 3)

    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("CREATE TABLE tiers (name VARCHAR, above DECIMAL(18,2))")
    conn.executemany("INSERT INTO tiers VALUES (?, ?)", [[t["name"], Decimal(str(t["above"]))] for t in rules["tiers"]])
    conn.execute(
        "CREATE TABLE promotion_rules (name VARCHAR, considers VARCHAR[], require_all VARCHAR[], "
        "exclude VARCHAR[], min_spend DECIMAL(18,2))"
    )
    conn.executemany(
        "INSERT INTO promotion_rules VALUES (?, ?, ?, ?, ?)",
        [
            [
                p["name"],
                p["considers"],
                p.get("require_all", []),
                p.get("exclude", []),
                None if p.get("min_spend") is None else Decimal(str(p["min_spend"])),
            ]
            for p in rules["promotions"]
        ],
    )

    step(
        "products",
        f"""
        CREATE TABLE products AS
        WITH messages AS (
            SELECT kafka_partition, kafka_offset, epoch_ms(m.ts) AS event_ts, m.key AS product_id,
                   m.payload IS NULL AS tombstone,
                   CASE WHEN json_valid(m.payload) THEN m.payload::JSON END AS j
            FROM ({_kafka(_files(data_dir, "products"))})
        ), typed AS (
            SELECT *, {_string("$.category")} AS category,
                   CASE WHEN json_type(j, '$.price') IN ('UBIGINT', 'BIGINT', 'DOUBLE')
                        THEN TRY_CAST(j ->> '$.price' AS DECIMAL(18,2)) END AS price
            FROM messages
        )
        SELECT product_id, event_ts, kafka_partition, kafka_offset, tombstone, category, price FROM typed
        WHERE tombstone OR (json_type(j) = 'OBJECT' AND category IS NOT NULL AND price >= 0
                            AND price = TRY_CAST(j ->> '$.price' AS DECIMAL(38,10)))  -- at most 2 decimals
    """,
    )
    step(
        "purchases",
        f"""
        CREATE TABLE purchases AS
        WITH messages AS (
            SELECT kafka_partition, kafka_offset, epoch_ms(m.ts) AS event_ts, m.key AS user_id,
                   CASE WHEN json_valid(m.payload) THEN m.payload::JSON END AS j
            FROM ({_kafka(_files(data_dir, "purchases"))})
            WHERE m.payload IS NOT NULL
        )
        SELECT kafka_partition, kafka_offset, event_ts, user_id, {_string("$.product_id")} AS product_id,
               {_string("$.order_id")} AS order_id,
               coalesce(json_type(j, '$.order_id'), 'NULL') NOT IN ('NULL', 'VARCHAR') AS bad_order_id,
               coalesce(json_type(j, '$.store_id'), 'NULL') NOT IN ('NULL', 'VARCHAR') AS bad_store_id
        FROM messages
        WHERE json_type(j) = 'OBJECT' AND product_id IS NOT NULL AND NOT bad_order_id AND NOT bad_store_id
    """,
    )
    historical = data_dir / "s3" / "historical_purchases"
    if any(historical.glob("*.csv")):
        pattern = str(historical / "*.csv").replace("'", "''")
        historical_sql = f"""
            SELECT *, ordinality - min(ordinality) OVER (PARTITION BY filename) + 1 AS row_no,
                   TRY_CAST(price AS DECIMAL(18,2)) AS amount,
                   timezone('UTC', TRY_CAST(purchased_at AS TIMESTAMPTZ)) AS purchased,
                   TRY_CAST(regexp_extract(filename, '(\\d{{4}}-\\d{{2}}-\\d{{2}})\\.csv$', 1) AS DATE) AS file_day
            FROM read_csv('{pattern}', header = true, auto_detect = false, filename = true,
                          columns = {{'order_id': 'VARCHAR', 'user_id': 'VARCHAR', 'product_id': 'VARCHAR',
                                     'price': 'VARCHAR', 'purchased_at': 'VARCHAR'}}) WITH ORDINALITY
        """
    else:
        historical_sql = (
            "SELECT NULL::VARCHAR AS order_id, NULL::VARCHAR AS user_id, NULL::VARCHAR AS product_id, "
            "NULL::BIGINT AS row_no, NULL::DECIMAL(18,2) AS amount, NULL::TIMESTAMP AS purchased, "
            "NULL::DATE AS file_day WHERE false"
        )
    step(
        "enriched_purchases",
        f"""
        CREATE TABLE enriched_purchases AS
        WITH kafka AS (
            SELECT 'purchases:' || kafka_partition || ':' || kafka_offset AS purchase_id,
                   coalesce(order_id, 'purchases:' || kafka_partition || ':' || kafka_offset) AS order_id,
                   user_id, product_id, NULL::DECIMAL(18,2) AS own_price, event_ts AS purchased_at, 'kafka' AS source
            FROM purchases
        ), s3 AS (
            SELECT 's3:' || trim(order_id) || ':' || trim(product_id) || ':' || row_no, trim(order_id), trim(user_id),
                   trim(product_id), amount, purchased, 's3'
            FROM ({historical_sql})
            WHERE nullif(trim(order_id), '') IS NOT NULL AND nullif(trim(user_id), '') IS NOT NULL
              AND nullif(trim(product_id), '') IS NOT NULL AND amount >= 0 AND purchased::DATE = file_day
        ), states AS (
            SELECT product_id, event_ts, category, price FROM products
            QUALIFY row_number() OVER (PARTITION BY product_id, event_ts
                                       ORDER BY kafka_offset DESC, kafka_partition DESC) = 1
        ), everything AS (SELECT * FROM kafka UNION ALL SELECT * FROM s3)
        SELECT purchase_id, order_id, user_id, everything.product_id,
               states.category,
               coalesce(own_price, states.price) AS price, purchased_at, source
        FROM everything ASOF LEFT JOIN states
             ON everything.product_id = states.product_id AND everything.purchased_at >= states.event_ts
    """,
    )
    step(
        "sales_totals",
        """
        CREATE TABLE sales_totals AS
        WITH totals AS (
            SELECT user_id, coalesce(sum(price), 0)::DECIMAL(18,2) AS total FROM enriched_purchases GROUP BY user_id
        )
        SELECT user_id, total, coalesce(arg_max(tiers.name, tiers.above), $default_tier) AS reward_level
        FROM totals LEFT JOIN tiers ON totals.total > tiers.above
        GROUP BY user_id, total
    """,
        {"default_tier": rules["default_tier"]},
    )
    step(
        "caffeine_index",
        """
        CREATE TABLE caffeine_index AS
        SELECT user_id, count(*) AS total, count(*) % $cycle AS sequence, count(*) % $cycle = $cycle - 1 AS next_one_free
        FROM enriched_purchases WHERE product_id = $product GROUP BY user_id
    """,
        {"cycle": int(rules["stamp_card"]["cycle"]), "product": rules["stamp_card"]["product_id"]},
    )
    step(
        "promotions",
        """
        CREATE TABLE promotions AS
        WITH considered AS (
            SELECT rule.name, purchase.user_id, list_sort(list_distinct(list(purchase.product_id))) AS products,
                   coalesce(sum(purchase.price), 0) AS spend
            FROM enriched_purchases AS purchase
            JOIN promotion_rules AS rule ON list_contains(rule.considers, purchase.product_id)
            GROUP BY ALL
        )
        SELECT considered.user_id, considered.name AS promotion_name, considered.products
        FROM considered JOIN promotion_rules AS rule USING (name)
        WHERE list_has_all(considered.products, rule.require_all) AND NOT list_has_any(considered.products, rule.exclude)
          AND (rule.min_spend IS NULL OR considered.spend > rule.min_spend)
    """,
    )
    customers = data_dir / "s3" / "customers"
    if any(customers.glob("*.csv")):
        pattern = str(customers / "*.csv").replace("'", "''")
        customers_sql = f"""
            SELECT trim(user_id) AS user_id, name, email, TRY_CAST(signup_date AS DATE) AS signup_date, filename,
                   ordinality AS row_no
            FROM read_csv('{pattern}', header = true, auto_detect = false, filename = true,
                          columns = {{'user_id': 'VARCHAR', 'name': 'VARCHAR', 'email': 'VARCHAR',
                                     'signup_date': 'VARCHAR'}}) WITH ORDINALITY
            WHERE nullif(trim(user_id), '') IS NOT NULL
        """
    else:
        customers_sql = (
            "SELECT NULL::VARCHAR AS user_id, NULL::VARCHAR AS name, NULL::VARCHAR AS email, "
            "NULL::DATE AS signup_date, NULL AS filename, NULL::BIGINT AS row_no WHERE false"
        )
    step(
        "profile",
        f"""
        CREATE TABLE profile AS
        WITH users AS (
            SELECT m.key AS user_id, epoch_ms(m.ts) AS event_ts, kafka_offset, m.payload IS NULL AS tombstone,
                   CASE WHEN json_valid(m.payload) THEN m.payload::JSON END AS j
            FROM ({_kafka(_files(data_dir, "users"))})
        ), valid_users AS (
            SELECT *, {_string("$.name")} AS name, {_string("$.email")} AS email FROM users
            WHERE tombstone OR (json_type(j) = 'OBJECT' AND {_string("$.name")} IS NOT NULL
                                AND coalesce(json_type(j, '$.email'), 'NULL') IN ('NULL', 'VARCHAR'))
        ), kafka AS (
            SELECT user_id, name, email, tombstone AS account_closed FROM valid_users
            QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY event_ts DESC, kafka_offset DESC) = 1
        ), export AS (
            SELECT user_id, name, email, signup_date FROM ({customers_sql})
            QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY filename DESC, row_no DESC) = 1
        ), spend AS (
            SELECT user_id, coalesce(sum(price), 0)::DECIMAL(18,2) AS total_spend, count(*) AS purchase_count,
                   avg(price)::DECIMAL(18,2) AS avg_purchase_price, min(purchased_at) AS first_purchase_at,
                   max(purchased_at) AS last_purchase_at, list_sort(list_distinct(list(product_id))) AS products_purchased
            FROM enriched_purchases GROUP BY user_id
        ), offers AS (
            SELECT user_id, list_sort(list(promotion_name)) AS promotions FROM promotions GROUP BY user_id
        ), known AS (
            SELECT user_id FROM valid_users UNION SELECT user_id FROM export UNION SELECT user_id FROM spend
        )
        SELECT known.user_id, coalesce(kafka.name, export.name) AS name, coalesce(kafka.email, export.email) AS email,
               coalesce(spend.total_spend, 0)::DECIMAL(18,2) AS total_spend, coalesce(spend.purchase_count, 0) AS purchase_count,
               spend.avg_purchase_price, spend.first_purchase_at, spend.last_purchase_at,
               coalesce(sales_totals.reward_level, $default_tier) AS reward_level,
               coalesce(spend.products_purchased, []::VARCHAR[]) AS products_purchased,
               coalesce(offers.promotions, []::VARCHAR[]) AS promotions,
               export.signup_date, coalesce(kafka.account_closed, false) AS account_closed
        FROM known
        LEFT JOIN kafka USING (user_id) LEFT JOIN export USING (user_id) LEFT JOIN spend USING (user_id)
        LEFT JOIN sales_totals USING (user_id) LEFT JOIN offers USING (user_id)
    """,
        {"default_tier": rules["default_tier"]},
    )
    return timings


OUTPUTS = ["sales_totals", "caffeine_index", "promotions", "profile"]


def run(data_dir: Path, out: Path, threads: int | None = None, memory_limit: str | None = None) -> dict:
    started = time.perf_counter()
    conn = duckdb.connect()
    if threads:
        conn.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        conn.execute(f"SET memory_limit = '{memory_limit.replace(chr(39), '')}'")
    timings = build(conn, Path(data_dir), load_rules(Path(data_dir)))
    out = Path(out)
    out.unlink(missing_ok=True)
    conn.execute(f"ATTACH '{str(out).replace(chr(39), chr(39) * 2)}' AS results")
    for table in OUTPUTS:
        conn.execute(f"CREATE TABLE results.{table} AS SELECT * FROM {table}")
    rows = {
        table: conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        for table in ["purchases", "products", "enriched_purchases", *OUTPUTS]
    }
    conn.execute("DETACH results")
    conn.close()
    return {"seconds": round(time.perf_counter() - started, 3), "steps": timings, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", required=True, help="DuckDB file for the result tables (replaced)")
    parser.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")
    parser.add_argument("--memory-limit", help="DuckDB memory_limit, e.g. 1GB (default: DuckDB's, 80%% of RAM)")
    args = parser.parse_args(argv)
    print(json.dumps(run(Path(args.data_dir), Path(args.out), args.threads, args.memory_limit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
