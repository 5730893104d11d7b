"""`python bench/generate.py`: realistic synthetic inputs to SPEC §3, at any scale, deterministic for a seed.

    python bench/generate.py --customers N --days D --out DIR [--seed S] [--start YYYY-MM-DD] [--layout connect_s3]

A developer tool (the benchmarks and the tests use it), not part of the `loyalty_pipeline` package.

Everything is computed set-based in one DuckDB connection and written with `COPY ... TO` (no Python loop over
rows; Python loops only over output files). Random draws are hashes of (row number, salt, seed), so the output
is the same for a seed whatever the thread count (for one DuckDB version: `hash()` is not a stable format).

Layout of DIR (a data dir for `loyalty-pipeline materialize --data-dir DIR`):

* `kafka/<topic>/<topic>-export-NN.jsonl[.gz]`: the kcat -J envelope, one file per week of event time (at least
  two), every second one gzipped; partitions by key hash, offsets in event-time order per partition. With
  `--layout connect_s3`, the same messages as Kafka Connect S3 sink objects instead:
  `s3/topics/<topic>/partition=<p>/<topic>+<p>+<first offset>.json[.gz]` (see `_write_connect`).
* `s3/customers/customers-part-{1,2,3}.csv`, `s3/historical_purchases/YYYY-MM-DD.csv` (one per day, every row on
  that day, a header-only file when there is none), `loyalty.yaml` (the SPEC §5 defaults of
  `loyalty_pipeline/domain/config.py` and two journeys),
  `manifest.json` (parameters and row counts).

Scale:

* orders = ceil(customers * days / 60), basket sizes 1..4 (40/30/20/10 %, mean 2.0; order 0 and 0.3 % of the
  others are a dog and a beret)
  -> purchase rows ~= customers * days / 30 (one product bought per customer per month on average);
     90 % of orders are Kafka `purchases` messages, 10 % are store orders in `historical_purchases/*.csv`.
  Customers: 70 % of orders uniformly, 30 % power-law (heavy buyers); 40 % of a customer's items are their
  favourite product (coffee for about one in seven), the rest by catalogue popularity; 0.1 % unlisted products.
* user_activity ~= 5 x purchase rows: a view (and 70 % an add_to_cart) before each purchased item, plus browsing.
* redemptions ~= purchase rows / 25, points 10..500, many above the customer's balance (refused by the ledger).
* users: one message per customer (80 % on the first day: the existing base, also in `customers/*.csv`;
  20 % sign up during the period), 10 % change their email, 0.5 % close their account (tombstone).
* products: a named catalogue (coffee, tea, dog, beret, ...) plus 200 long-tail SKUs, each re-priced about
  every 14 days; a few messages have a negative price (rejected).
* At-least-once exports: ~0.2 % of messages appear again in the neighbouring export file (same partition and
  offset); ~0.05 % of lines are a truncated copy of a message (corrupt JSON, the intact line follows); ~0.02 %
  of purchases miss `product_id`; ~0.1 % of CSV rows have price `N/A`. At least one of each at any scale
  (per topic for the Kafka ones).

1M purchases (with 5M clickstream events) take about 30 s on 2 cores.
"""

import argparse
import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import yaml

from loyalty_pipeline.domain.config import Rules
from loyalty_pipeline.domain.ingest.kafka import TOPICS

DAY_MS = 86_400_000

# (product_id, category, base price, popularity weight): the products the default rules talk about, and friends.
CATALOGUE = [
    ("coffee", "beverages", 2.99, 120),
    ("tea", "beverages", 2.55, 35),
    ("latte", "beverages", 3.85, 60),
    ("espresso", "beverages", 2.40, 40),
    ("cappuccino", "beverages", 3.60, 45),
    ("juice", "beverages", 3.20, 25),
    ("water", "beverages", 1.20, 30),
    ("scone", "bakery", 3.20, 30),
    ("cake", "bakery", 4.75, 20),
    ("croissant", "bakery", 2.80, 35),
    ("bagel", "bakery", 2.50, 25),
    ("muffin", "bakery", 2.90, 25),
    ("sandwich", "deli", 6.90, 30),
    ("salad", "deli", 7.50, 15),
    ("honey", "pantry", 6.50, 8),
    ("coffee_beans", "pantry", 14.90, 10),
    ("loose_tea", "pantry", 9.90, 5),
    ("mug", "homeware", 12.00, 6),
    ("french_press", "homeware", 34.90, 3),
    ("grinder", "homeware", 59.00, 2),
    ("dog", "pets", 249.99, 2),
    ("dog_food", "pets", 39.90, 6),
    ("leash", "pets", 19.90, 3),
    ("beret", "apparel", 24.99, 4),
    ("scarf", "apparel", 29.90, 3),
    ("handbag", "accessories", 89.00, 2),
    ("umbrella", "accessories", 19.00, 2),
]
LONG_TAIL = 200  # extra SKUs `sku-0001`..: small weights, prices 1..150
TAIL_CATEGORIES = ["grocery", "snacks", "household", "beauty", "toys", "books", "garden", "electronics"]
FIRST_NAMES = [
    "Kris",
    "Dave",
    "Yeva",
    "Rick",
    "Mona",
    "Ana",
    "Cleo",
    "Liam",
    "Noah",
    "Emma",
    "Olivia",
    "Ava",
    "Mia",
    "Lucas",
    "Leo",
    "Sofia",
    "Elena",
    "Marco",
    "Aiko",
    "Ravi",
    "Priya",
    "Omar",
    "Fatima",
    "Jonas",
    "Ines",
    "Hugo",
    "Lena",
    "Pavel",
    "Nadia",
    "Tariq",
    "Chen",
    "Mei",
    "Sam",
    "Alex",
    "Jo",
    "Kim",
]
LAST_NAMES = [
    "Smith",
    "Jones",
    "Garcia",
    "Muller",
    "Rossi",
    "Dubois",
    "Novak",
    "Kowalski",
    "Silva",
    "Santos",
    "Kim",
    "Lee",
    "Tanaka",
    "Sato",
    "Patel",
    "Shah",
    "Khan",
    "Haddad",
    "Cohen",
    "Levi",
    "Nielsen",
    "Berg",
    "Ivanova",
    "Petrov",
    "Moreau",
    "Fischer",
    "Weber",
    "Costa",
    "Lopez",
    "Brown",
]

PARTITIONS = {"users": 3, "products": 3, "purchases": 6, "user_activity": 6, "redemptions": 3}
DUPLICATE_SHARE, CORRUPT_SHARE = 0.002, 0.0005

JOURNEYS_YAML = """\
journeys:
  - id: tea_trial
    audience: "list_contains(products_purchased, 'coffee')"
    goal: "list_contains(products_purchased, 'tea')"
    stages:
      - id: nudge
        steps: [{activation: tea_coupon}, {wait_days: 3}]
        exit_criteria: [{name: lapsed, when: "days_since_last_purchase > 30"}]
      - id: reward
        entry: "total_spend > 50"
        steps: [{activation: double_points}]
  - id: offer                   # a decision, an A/B test with control, wait_until, re-entry and a holdout
    audience: "purchase_count >= 0"
    goal: "purchase_count >= 4"
    reentry: always
    holdout_pct: 20
    stages:
      - id: s
        steps:
          - decision:
              branches:
                - {name: big, when: "total_spend >= 50", steps: [{activation: premium}]}
                - {name: tea, when: "list_contains(products_purchased, 'tea')", steps: []}
              max_wait_days: 1
          - ab_test: {variants: [{name: a, weight: 45, steps: [{activation: coupon}]}, {name: b, weight: 45}], control: 10}
          - {wait_until: "purchase_count >= 2", max_days: 1}
"""


def rules_yaml(start: date) -> str:
    """The loyalty.yaml to write: `start`, the rule defaults of `loyalty_pipeline.domain.config.Rules` (SPEC §5: tiers,
    stamp card, promotions, points; declared there only) and the one journey above."""
    defaults = Rules().model_dump(exclude={"start_date", "journeys", "kafka"}, exclude_none=True)
    return (
        "# Generated by `python bench/generate.py`: the defaults of SPEC §5 (loyalty_pipeline/domain/config.py), one journey.\n"
        f"start_date: {start.isoformat()}  # the first day partition: the first day with events\n"
        + yaml.safe_dump(_plain(defaults), sort_keys=False, default_flow_style=None)
        + JOURNEYS_YAML
    )


def _plain(value):
    """Decimals as YAML numbers (safe_dump knows no Decimal); integral ones as ints."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=int, required=True, help="number of customers")
    parser.add_argument("--days", type=int, required=True, help="number of UTC days of events")
    parser.add_argument("--out", required=True, help="output folder (becomes a data dir: kafka/, s3/, loyalty.yaml)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42): same seed, same files")
    parser.add_argument(
        "--start", type=date.fromisoformat, default=date(2024, 1, 1), help="first day, YYYY-MM-DD (default 2024-01-01)"
    )
    parser.add_argument(
        "--layout",
        choices=("kcat", "connect_s3"),
        default="kcat",
        help="Kafka topics as kcat files (default) or Kafka Connect S3 sink objects under s3/topics/",
    )


def run(args: argparse.Namespace) -> int:
    if args.customers < 1 or args.days < 1:
        print("error: --customers and --days must be at least 1")
        return 2
    started = time.perf_counter()
    stats = generate(Path(args.out), args.customers, args.days, seed=args.seed, start=args.start, layout=args.layout)
    counts = ", ".join(f"{name} {value}" for name, value in stats["rows"].items())
    print(f"generated {args.out} in {time.perf_counter() - started:.1f}s: {counts}")
    return 0


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def generate(
    out: Path,
    customers: int,
    days: int,
    seed: int = 42,
    start: date = date(2024, 1, 1),
    threads: int | None = None,
    layout: str = "kcat",
) -> dict:
    """Writes a data dir under `out` (replacing its kafka/, s3/ and loyalty.yaml) and returns a manifest dict,
    also written to `out/manifest.json`. `layout` connect_s3: the same messages as Kafka Connect objects."""
    out = Path(out)
    for folder in ("kafka", "s3"):
        shutil.rmtree(out / folder, ignore_errors=True)
    (out / "s3" / "customers").mkdir(parents=True)
    (out / "s3" / "historical_purchases").mkdir(parents=True)
    start_ms = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000)
    end_ms = start_ms + days * DAY_MS
    conn = duckdb.connect()
    if threads:
        conn.execute(f"SET threads = {int(threads)}")
    conn.execute("SET TimeZone = 'UTC'")
    seed = int(seed)
    # h(i, salt): a 64-bit hash of one integer (hash() of several arguments mixes small integers poorly);
    # u(i, salt): a uniform double in [0, 1) from it. The same for a seed, whatever the threads.
    conn.execute(f"CREATE MACRO h(i, salt) AS xor(hash(i::BIGINT * 1024 + salt), hash({seed}::BIGINT))")
    conn.execute("CREATE MACRO u(i, salt) AS (h(i, salt) >> 11)::DOUBLE / 9007199254740992.0")
    # A customer index: 70 % uniform, 30 % power-law (heavy buyers), scattered over the ids.
    conn.execute(
        f"""CREATE MACRO pick_customer(i, salt) AS
            ((CASE WHEN u(i, salt) < 0.7 THEN floor(u(i, salt + 1) * {customers})
                   ELSE floor(pow(u(i, salt + 1), 2) * {customers}) END)::BIGINT * 2147483647 % {customers})"""
    )
    width = max(6, len(str(customers)))
    conn.execute(f"CREATE MACRO user_key(idx) AS 'u' || lpad((idx + 1)::VARCHAR, {width}, '0')")
    conn.execute(
        "CREATE MACRO envelope(topic, p, o, ts, k, payload) AS to_json({'topic': topic, 'partition': p, "
        "'offset': o, 'tstype': 'create', 'ts': ts, 'broker': 1 + p % 3, 'key': k, 'payload': payload})::VARCHAR"
    )

    _catalogue(conn, days, start_ms)
    _users(conn, customers, start_ms, end_ms, start)
    _orders(conn, customers, days, start_ms)
    _activity(conn, customers, days, start_ms)
    _redemptions(conn, customers, days, start_ms)
    files = _write_kafka(conn, out, days, start_ms, layout)
    _write_s3(conn, out, days, start, start_ms)
    (out / "loyalty.yaml").write_text(rules_yaml(start) + (CONNECT_YAML if layout == "connect_s3" else ""))

    def scalar(sql: str):
        return conn.execute(sql).fetchall()[0][0]

    manifest = {
        "params": {"customers": customers, "days": days, "seed": seed, "start": start.isoformat(), "layout": layout},
        "first_day": start.isoformat(),
        "last_day": date.fromordinal(start.toordinal() + days - 1).isoformat(),
        "rows": {
            "purchases": scalar("SELECT count(*) FROM items"),
            "kafka_purchases": scalar("SELECT count(*) FROM items WHERE channel = 'kafka'"),
            "s3_purchases": scalar("SELECT count(*) FROM items WHERE channel = 's3'"),
            "orders": scalar("SELECT count(*) FROM orders"),
            "user_activity": scalar("SELECT count(*) FROM activity"),
            "redemptions": scalar("SELECT count(*) FROM redemptions"),
            "users_messages": scalar("SELECT count(*) FROM user_messages"),
            "products_messages": scalar("SELECT count(*) FROM product_messages"),
            "customers_csv": scalar("SELECT count(*) FROM users WHERE existing"),
        },
        "kafka_lines": {
            "duplicates": scalar("SELECT count(*) FROM extra_lines WHERE kind = 1"),
            "corrupt": scalar("SELECT count(*) FROM extra_lines WHERE kind = -1"),
            "invalid_payloads": scalar("SELECT count(*) FROM messages WHERE invalid"),
        },
        "files": files,
    }
    conn.close()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _catalogue(conn, days: int, start_ms: int) -> None:
    named = ", ".join(
        f"({idx}, {_sql_text(p)}, {_sql_text(c)}, {price}, {weight})"
        for idx, (p, c, price, weight) in enumerate(CATALOGUE)
    )
    categories = "[" + ", ".join(_sql_text(c) for c in TAIL_CATEGORIES) + "]"
    conn.execute(
        f"""
        CREATE TABLE catalogue AS
        WITH listed AS (
            SELECT * FROM (VALUES {named}) v(idx, product_id, category, base_price, weight)
            UNION ALL
            SELECT {len(CATALOGUE)} + i, 'sku-' || lpad((i + 1)::VARCHAR, 4, '0'),
                   {categories}[1 + (h(i, 3) % {len(TAIL_CATEGORIES)})::INTEGER],
                   round(1 + pow(u(i, 1), 2) * 149, 2), 0.2 + 2 * u(i, 2)
            FROM range({LONG_TAIL}) t(i)
        )
        SELECT *, (sum(weight) OVER (ORDER BY idx ROWS UNBOUNDED PRECEDING) - weight) / sum(weight) OVER () AS cum_lo
        FROM listed
        """
    )
    # Price history: the first state on day 0 (before any purchase), then a re-pricing about every 14 days.
    changes = math.ceil(days / 14)
    conn.execute(
        f"""
        CREATE TABLE product_messages AS
        SELECT product_id, {start_ms} + idx * 1000 AS ts,
               json_object('category', category, 'price', base_price::DECIMAL(18,2))::VARCHAR AS payload, false AS invalid,
               idx * 10000 AS seq
        FROM catalogue
        UNION ALL
        SELECT product_id, {start_ms} + 3600000 + floor(u(idx * 1000 + k, 11) * ({days * DAY_MS} - 3600000))::BIGINT,
               json_object('category', category,
                           'price', round(base_price * (0.85 + 0.35 * u(idx * 1000 + k, 12)), 2)::DECIMAL(18,2))::VARCHAR,
               false, idx * 10000 + 1 + k
        FROM catalogue, range({changes}) r(k)
        UNION ALL  -- a few bad messages (negative price): rejected, never a state
        SELECT product_id, {start_ms} + 7200000 + floor(u(idx, 13) * ({days * DAY_MS} - 7200000))::BIGINT,
               json_object('category', category, 'price', -1.00)::VARCHAR, true, idx * 10000 + 9999
        FROM catalogue WHERE idx % 97 = 5
        """
    )


def _users(conn, customers: int, start_ms: int, end_ms: int, start: date) -> None:
    first = "[" + ", ".join(_sql_text(n) for n in FIRST_NAMES) + "]"
    last = "[" + ", ".join(_sql_text(n) for n in LAST_NAMES) + "]"
    span = end_ms - start_ms
    conn.execute(
        f"""
        CREATE TABLE users AS
        SELECT i, user_key(i) AS user_id,
               {first}[1 + (h(i, 21) % {len(FIRST_NAMES)})::INTEGER] || ' ' ||
               {last}[1 + (h(i, 22) % {len(LAST_NAMES)})::INTEGER] AS name,
               u(i, 23) < 0.8 AS existing,
               CASE WHEN u(i, 23) < 0.8 THEN {start_ms} + floor(u(i, 24) * 21600000)::BIGINT
                    ELSE {start_ms} + floor(u(i, 24) * {span})::BIGINT END AS created_ms,
               DATE '{start.isoformat()}' - (1 + floor(u(i, 25) * 1500))::INTEGER AS signup_before,
               u(i, 26) AS r_email, u(i, 27) AS r_update, u(i, 28) AS r_close
        FROM range({customers}) t(i)
        """
    )
    conn.execute(
        f"""
        CREATE TABLE user_messages AS
        WITH people AS (
            SELECT *, lower(replace(name, ' ', '.')) || '.' || (i + 1) || '@example.com' AS email FROM users
        )
        SELECT user_id, created_ms AS ts,
               CASE WHEN r_email < 0.9 THEN json_object('name', name, 'email', email)
                    ELSE json_object('name', name) END::VARCHAR AS payload, false AS invalid, i * 4 AS seq
        FROM people
        UNION ALL  -- 10 %: a new email address, in the first half of the rest of the period
        SELECT user_id, created_ms + 1000 + floor(u(i, 29) * ({end_ms} - created_ms - 1000) / 2)::BIGINT,
               json_object('name', name, 'email', replace(email, '@example.com', '@mail.example.org'))::VARCHAR, false,
               i * 4 + 1
        FROM people WHERE r_update < 0.1
        UNION ALL  -- 0.5 %: the account is closed (tombstone) in the second half
        SELECT user_id, created_ms + floor((0.5 + u(i, 30) / 2) * ({end_ms} - created_ms))::BIGINT, NULL, false, i * 4 + 2
        FROM people WHERE r_close < 0.005
        """
    )


def _orders(conn, customers: int, days: int, start_ms: int) -> None:
    orders = math.ceil(customers * days / 60)
    conn.execute(
        f"""
        CREATE TABLE orders AS
        SELECT i, 'o-' || lpad((i + 1)::VARCHAR, 9, '0') AS order_id, pick_customer(i, 40) AS customer,
               user_key(customer) AS user_id,
               {start_ms} + floor(u(i, 42) * {days})::BIGINT * {DAY_MS}
                 + floor((6 + 16 * (u(i, 43) + u(i, 44)) / 2) * 3600000)::BIGINT AS ts,
               CASE WHEN u(i, 45) < 0.4 THEN 1 WHEN u(i, 45) < 0.7 THEN 2 WHEN u(i, 45) < 0.9 THEN 3 ELSE 4 END AS drawn_size,
               CASE WHEN u(i, 46) < 0.1 THEN 's3' ELSE 'kafka' END AS channel,
               CASE WHEN u(i, 47) < 0.5 THEN 'store-' || lpad((1 + h(i, 48) % 50)::VARCHAR, 3, '0') END AS store_id,
               u(i, 49) AS r_order_id,
               -- a dog and a beret in one basket (the article's french_poodle): 0.3 %, and always the first order
               u(i, 54) < 0.003 OR i = 0 AS poodle,
               CASE WHEN poodle THEN greatest(drawn_size, 2) ELSE drawn_size END AS size
        FROM range({orders}) t(i)
        """
    )
    conn.execute(
        """
        CREATE TABLE items AS
        WITH lines AS (
            SELECT orders.*, unnest(range(size)) AS item_no FROM orders
        ), draws AS (
            -- 40 % of a customer's items are their favourite product (one draw per customer), the rest by popularity
            SELECT *, i * 4 + item_no AS n,
                   CASE WHEN u(i * 4 + item_no, 56) < 0.4 THEN u(customer, 55) ELSE u(i * 4 + item_no, 50) END AS r_product
            FROM lines
        )
        SELECT draws.i, order_id, user_id, ts + item_no * 250 AS ts, size, channel, store_id, r_order_id, item_no, n,
               CASE WHEN poodle AND item_no = 0 THEN 'dog' WHEN poodle AND item_no = 1 THEN 'beret'
                    WHEN u(n, 51) < 0.001 THEN 'unlisted-' || (h(n, 52) % 5)  -- not in the catalogue: unpriced
                    ELSE catalogue.product_id END AS product_id,
               channel = 'kafka' AND u(n, 53) < 0.0002 AS invalid  -- payload without product_id
        FROM draws ASOF JOIN catalogue ON draws.r_product >= catalogue.cum_lo
        """
    )
    conn.execute("UPDATE items SET invalid = true WHERE n = (SELECT max(n) FROM items WHERE channel = 'kafka')")
    # Store orders carry their own price: the product's price as of the order.
    conn.execute(
        """
        CREATE TABLE s3_items AS
        WITH states AS (
            SELECT product_id, ts, (payload ->> '$.price')::DECIMAL(18,2) AS price
            FROM product_messages WHERE NOT invalid
        )
        SELECT items.*, coalesce(states.price, 9.99) AS price
        FROM items ASOF LEFT JOIN states ON items.product_id = states.product_id AND items.ts >= states.ts
        WHERE channel = 's3'
        """
    )


def _activity(conn, customers: int, days: int, start_ms: int) -> None:
    conn.execute(
        """
        CREATE TABLE activity AS
        SELECT user_id, ts - 60000 - floor(u(n, 60) * 1800000)::BIGINT AS ts, 'view' AS event_type, product_id, n * 2 AS k
        FROM items WHERE product_id NOT LIKE 'unlisted-%'
        UNION ALL
        SELECT user_id, ts - 1000 - floor(u(n, 61) * 59000)::BIGINT, 'add_to_cart', product_id, n * 2 + 1
        FROM items WHERE u(n, 62) < 0.7 AND product_id NOT LIKE 'unlisted-%'
        """
    )
    browsing = max(
        0,
        5 * conn.execute("SELECT count(*) FROM items").fetchall()[0][0]
        - conn.execute("SELECT count(*) FROM activity").fetchall()[0][0],
    )
    conn.execute(
        f"""
        INSERT INTO activity
        WITH draws AS (
            SELECT i, u(i, 63) AS r_product, u(i, 64) AS r_type FROM range({browsing}) t(i)
        )
        SELECT user_key(pick_customer(i, 65)),
               greatest({start_ms}, {start_ms} + floor(u(i, 67) * {days * DAY_MS})::BIGINT),
               CASE WHEN r_type < 0.8 THEN 'view' WHEN r_type < 0.92 THEN 'add_to_cart' ELSE 'remove_from_cart' END,
               catalogue.product_id, -1 - i
        FROM draws ASOF JOIN catalogue ON draws.r_product >= catalogue.cum_lo
        """
    )
    # The views before a purchase on the first morning would fall before the first day: keep them in range.
    conn.execute(f"UPDATE activity SET ts = {start_ms} + (ts - {start_ms}) % 1000 WHERE ts < {start_ms}")


def _redemptions(conn, customers: int, days: int, start_ms: int) -> None:
    count = math.ceil(conn.execute("SELECT count(*) FROM items").fetchall()[0][0] / 25)
    conn.execute(
        f"""
        CREATE TABLE redemptions AS
        SELECT i AS seq, user_key(pick_customer(i, 70)) AS user_id,
               {start_ms} + floor(u(i, 71) * {days * DAY_MS})::BIGINT AS ts,
               'rd-' || lpad((i + 1)::VARCHAR, 8, '0') AS redemption_id,
               CASE WHEN u(i, 72) < 0.5 THEN [100, 200, 500][1 + (h(i, 73) % 3)::INTEGER]
                    ELSE 10 + floor(u(i, 74) * 290)::INTEGER END AS points
        FROM range({count}) t(i)
        """
    )


CONNECT_YAML = "kafka: {layout: connect_s3, timestamp: {field: ts}}  # the InsertField transform's ts\n"


def _write_connect(conn, out: Path, files_per_topic: int) -> dict[str, list[str]]:
    """The placed messages as Kafka Connect S3 sink objects (default partitioner): one object per topic, partition
    and time slice, named by its first offset, every second one gzipped; a record is the payload with the key (as
    the topic's key field) and the time (`ts`) an InsertField transform adds. One overlapping object per topic: a
    connector restart that wrote a slice's last messages again."""
    keys = {topic.name: topic.key for topic in TOPICS.values()}
    files: dict[str, list[str]] = {}
    groups = conn.execute("SELECT topic, p, file_no, min(o), max(o) FROM placed GROUP BY ALL ORDER BY ALL").fetchall()
    for topic, p, file_no, first, last in groups:
        folder = out / "s3" / "topics" / topic / f"partition={p}"
        folder.mkdir(parents=True, exist_ok=True)
        restart = file_no == 0 and p == 0 and last > first  # the slice's second half again, from its middle offset
        for start in [first, (first + last + 1) // 2] if restart else [first]:
            gz = file_no % 2 == 1
            name = f"{topic}+{p}+{start:010d}.json" + (".gz" if gz else "")
            files.setdefault(topic, []).append(f"partition={p}/{name}")
            conn.execute(
                f"""COPY (SELECT CASE WHEN coalesce(payload, 'null') = 'null' THEN 'null'  -- a tombstone: no record
                                      ELSE json_merge_patch(payload, json_object({_sql_text(keys[topic])}, k, 'ts', ts))
                                 END
                          FROM placed
                          WHERE topic = $topic AND p = $p AND file_no = $file_no AND o >= $start ORDER BY o)
                    TO {_sql_text(str(folder / name))}
                    (FORMAT csv, HEADER false, DELIMITER '\x1f', QUOTE '', ESCAPE '', COMPRESSION {"gzip" if gz else "none"})""",
                {"topic": topic, "p": p, "file_no": file_no, "start": start},
            )
    return files


def _write_kafka(conn, out: Path, days: int, start_ms: int, layout: str = "kcat") -> dict[str, list[str]]:
    conn.execute(
        """
        CREATE TABLE messages AS
        SELECT 'users' AS topic, user_id AS k, ts, payload, invalid, seq FROM user_messages
        UNION ALL SELECT 'products', product_id, ts, payload, invalid, seq FROM product_messages
        UNION ALL
        SELECT 'purchases', user_id, ts,
               CASE WHEN invalid THEN json_object('order_id', order_id, 'sku', product_id)
                    WHEN size > 1 OR r_order_id < 0.5
                    THEN CASE WHEN store_id IS NULL THEN json_object('product_id', product_id, 'order_id', order_id)
                              ELSE json_object('product_id', product_id, 'order_id', order_id, 'store_id', store_id) END
                    ELSE json_object('product_id', product_id) END::VARCHAR,
               invalid, n
        FROM items WHERE channel = 'kafka'
        UNION ALL
        SELECT 'user_activity', user_id, ts, json_object('event_type', event_type, 'product_id', product_id)::VARCHAR,
               false, k FROM activity
        UNION ALL
        SELECT 'redemptions', user_id, ts, json_object('redemption_id', redemption_id, 'points', points)::VARCHAR,
               false, seq FROM redemptions
        """
    )
    partitions = " ".join(f"WHEN '{topic}' THEN {n}" for topic, n in PARTITIONS.items())
    files_per_topic = max(2, math.ceil(days / 7))  # weekly exports (at least two files)
    conn.execute(
        f"""
        CREATE TABLE placed AS
        WITH keyed AS (
            SELECT *, (hash(k) % (CASE topic {partitions} END))::INTEGER AS p FROM messages
        )
        SELECT topic, p, row_number() OVER (PARTITION BY topic, p ORDER BY ts, seq) - 1 AS o, ts, k, payload,
               least({files_per_topic - 1}, (ts - {start_ms}) * {files_per_topic} // {days * DAY_MS})::INTEGER AS file_no,
               envelope(topic, p, o, ts, k, payload) AS line, u(hash(topic, p, o) >> 24, 80) AS r
        FROM keyed
        """
    )
    # Every message once, in the file of its time slice; ~0.2 % again in the next file (an overlapping export,
    # same partition and offset); ~0.05 % preceded by a truncated copy of itself (a torn write). Per topic, the
    # message with the smallest draw is always duplicated and the one with the largest always torn, so every
    # scale has both.
    conn.execute(
        f"""
        CREATE TABLE extra_lines AS
        WITH bounds AS (SELECT topic, min(r) AS lowest, max(r) AS highest FROM placed GROUP BY topic)
        SELECT topic, CASE WHEN file_no + 1 < {files_per_topic} THEN file_no + 1
                           ELSE greatest(file_no - 1, 0) END AS file_no, ts, p, o, 1 AS kind, line
        FROM placed JOIN bounds USING (topic) WHERE r < {DUPLICATE_SHARE} OR r = lowest
        UNION ALL
        SELECT topic, file_no, ts, p, o, -1, left(line, length(line) // 2)
        FROM placed JOIN bounds USING (topic)
        WHERE (r >= {DUPLICATE_SHARE} AND r < {DUPLICATE_SHARE + CORRUPT_SHARE}) OR r = highest
        """
    )
    if layout == "connect_s3":
        return _write_connect(conn, out, files_per_topic)
    jobs = []
    files: dict[str, list[str]] = {}
    for topic in PARTITIONS:
        folder = out / "kafka" / topic
        folder.mkdir(parents=True, exist_ok=True)
        files[topic] = []
        for file_no in range(files_per_topic):
            gz = file_no % 2 == 1
            name = f"{topic}-export-{file_no + 1:02d}.jsonl" + (".gz" if gz else "")
            files[topic].append(name)
            jobs.append(
                (
                    not gz,
                    f"""
                COPY (SELECT line FROM (
                          SELECT ts, p, o, 0 AS kind, line FROM placed WHERE topic = '{topic}' AND file_no = {file_no}
                          UNION ALL
                          SELECT ts, p, o, kind, line FROM extra_lines WHERE topic = '{topic}' AND file_no = {file_no})
                      ORDER BY ts, p, o, kind)
                TO {_sql_text(str(folder / name))}
                (FORMAT csv, HEADER false, DELIMITER '\x1f', QUOTE '', ESCAPE '', COMPRESSION {"gzip" if gz else "none"})
            """,
                )
            )
    # One file per COPY, several at once (gzip is single-threaded): the loop is over files, never rows.
    jobs.sort(key=lambda job: job[0])  # the compressed (slow) ones first
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for future in [pool.submit(_copy, conn, sql) for _, sql in jobs]:
            future.result()
    return files


def _copy(conn, sql: str) -> None:
    cursor = conn.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def _write_s3(conn, out: Path, days: int, start: date, start_ms: int) -> None:
    for part in range(3):  # the export of the customers who existed before the first day, in 3 files
        conn.execute(
            f"""
            COPY (SELECT user_id, name,
                         CASE WHEN r_email < 0.9 THEN lower(replace(name, ' ', '.')) || '.' || (i + 1) || '@example.com' END
                             AS email,
                         signup_before AS signup_date
                  FROM users WHERE existing AND i % 3 = {part} ORDER BY i)
            TO {_sql_text(str(out / "s3" / "customers" / f"customers-part-{part + 1}.csv"))} (HEADER)
            """
        )
    conn.execute(
        f"""
        CREATE TABLE s3_rows AS
        SELECT (ts - {start_ms}) // {DAY_MS} AS day_no, ts, order_id, item_no, user_id, product_id,
               CASE WHEN u(n, 90) < 0.001 OR n = (SELECT max(n) FROM s3_items) THEN 'N/A'
                    ELSE price::VARCHAR END AS price,
               strftime(epoch_ms(ts), '%Y-%m-%dT%H:%M:%S.%gZ') AS purchased_at
        FROM s3_items
        """
    )
    for day_no in range(days):
        day = date.fromordinal(start.toordinal() + day_no).isoformat()
        conn.execute(
            f"""COPY (SELECT order_id, user_id, product_id, price, purchased_at FROM s3_rows WHERE day_no = {day_no}
                      ORDER BY ts, order_id, item_no)
                TO {_sql_text(str(out / "s3" / "historical_purchases" / f"{day}.csv"))} (HEADER)"""
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="generate.py", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
