"""Kafka topic snapshots in the `kcat -C -J` envelope: the topics' contracts, their raw tables and the snapshot files'
names. messages.py reads the snapshots by these contracts."""

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """One value field of a topic's JSON payload."""

    name: str
    sql_type: str = "VARCHAR"
    required: bool = True
    valid: str | None = None  # SQL predicate over the typed value, by its name
    rule: str = "a string"  # the type and predicate in words, for the rejection reason
    maximum: int | None = None  # the largest value accepted (sums over many rows must stay within their types)


# Snapshot files are JSON lines, whatever the extension says or its letter case; anything else is reported.
SNAPSHOT_NAMES = "*.jsonl, *.ndjson or *.json, optionally .gz"
_SNAPSHOT_NAME = re.compile(r".+\.(jsonl|ndjson|json)(\.gz)?", re.IGNORECASE)


def is_snapshot(name: str) -> bool:
    """Whether a file named `name` under a topic folder is read as a snapshot (`late-export.JSONL`, `x.ndjson.gz`)."""
    return _SNAPSHOT_NAME.fullmatch(name) is not None


# The largest price accepted, on Kafka and in CSV files alike: lifetime sums over millions of purchases stay within
# DECIMAL(18,2), and points (price x earn rate, at most 1000) within BIGINT.
MAX_PRICE = 1_000_000_000


@dataclass(frozen=True)
class Topic:
    name: str
    key: str  # the column the Kafka message key becomes
    fields: tuple[Field, ...]
    event_time: str | None = None  # a payload field (ms) that, when present, is the event time instead of `ts`
    valid: tuple[str, str] | None = None  # a rule over several fields: (SQL predicate, rejection reason)

    @property
    def columns(self) -> list[str]:
        return [self.key] + [field.name for field in self.fields]


TOPICS = {
    topic.name: topic
    for topic in [
        Topic(
            "users",
            "user_id",
            (Field("name"), *(Field(name, required=False) for name in ("email", "card_id", "phone"))),
        ),
        Topic(
            "products",
            "product_id",
            (
                Field("category"),
                Field(
                    "price",
                    "DECIMAL(18,2)",
                    valid="price >= 0 AND price = TRY_CAST(payload ->> '$.price' AS DECIMAL(38,10))",
                    rule="a non-negative number with at most 2 decimals",
                    maximum=MAX_PRICE,
                ),
            ),
        ),
        Topic(
            "purchases",
            "user_id",
            (
                Field("product_id"),
                *(Field(name, required=False) for name in ("order_id", "store_id", "email", "card_id", "phone")),
            ),
        ),
        Topic(
            "user_activity",
            "user_id",
            (
                Field(
                    "event_type",
                    valid="event_type IN ('view', 'add_to_cart', 'remove_from_cart')",
                    rule="one of view, add_to_cart, remove_from_cart",
                ),
                Field("product_id"),
            ),
        ),
        Topic(
            "redemptions",
            "user_id",
            (Field("redemption_id"), Field("points", "INTEGER", valid="points > 0", rule="a positive integer")),
        ),
        Topic(
            "returns",
            "user_id",
            (
                *(Field(name, required=False) for name in ("purchase_id", "order_id", "product_id")),
                Field("returned_at", "BIGINT", required=False, valid="returned_at >= 0", rule="a time in ms"),
            ),
            event_time="returned_at",
            valid=(
                "NOT tombstone AND (purchase_id IS NOT NULL OR (order_id IS NOT NULL AND product_id IS NOT NULL))",
                "a return names purchase_id, or order_id and product_id",
            ),
        ),
        Topic(  # what a customer did besides buying (sign_up, birthday, review, referral, ...): event_rules' points
            "events",
            "user_id",
            (
                Field(
                    "type", valid="regexp_full_match(type, '[A-Za-z0-9_-]+')", rule="a name of letters, digits, _ or -"
                ),
                Field("referee", required=False),  # a referral: the key of the customer referred
            ),
        ),
    ]
}


def table_ddl(topic: Topic) -> str:
    values = ",\n    ".join(f"{field.name} {field.sql_type}" for field in topic.fields)
    return f"""
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS raw.{topic.name} (
    {topic.key} VARCHAR,
    {values},
    tombstone BOOLEAN NOT NULL,  -- a null payload: the key's record was deleted (for users: account closed)
    kafka_partition INTEGER NOT NULL,
    kafka_offset BIGINT NOT NULL,
    event_ts TIMESTAMP NOT NULL,
    day DATE NOT NULL,
    location VARCHAR NOT NULL
);
""" + "".join(  # optional fields added since a warehouse was created
        f"ALTER TABLE raw.{topic.name} ADD COLUMN IF NOT EXISTS {field.name} {field.sql_type};\n"
        for field in topic.fields
        if not field.required
    )
