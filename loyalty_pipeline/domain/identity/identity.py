"""Who is who, as the other domains read it: the id graph's tables, each id's person as of a day, a person's linked
ids and purchases; and what counts as an identifier value (placeholders, customer keys). `graph.py` builds the graph
day by day."""

from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.warehouse import in_span, spans

DDL = """
CREATE SCHEMA IF NOT EXISTS identity;
CREATE TABLE IF NOT EXISTS identity.id_graph (
    id_type VARCHAR NOT NULL,       -- user_id | email | card_id | phone | name | customer_key (an event's key)
    id_value VARCHAR NOT NULL,      -- trimmed; emails and names lower-case
    customer_id VARCHAR NOT NULL,   -- the person the identifier resolves to, from linked_on on
    strength VARCHAR NOT NULL,      -- strong (matched by value) | weak (links only when unique)
    rule VARCHAR NOT NULL,          -- account | key | link_on:<field> | link_if_unique:<field> | merge
    source VARCHAR NOT NULL,        -- the record that linked it: users:<p>:<o>, purchases:<p>:<o>, s3:<key>:<row>, ...
    first_seen_at TIMESTAMP NOT NULL,
    linked_on DATE NOT NULL         -- the row holds from this day until a later row of the identifier
);
CREATE TABLE IF NOT EXISTS identity.weak_values (  -- which accounts carry each weak value, and since when
    id_type VARCHAR NOT NULL, id_value VARCHAR NOT NULL, account VARCHAR NOT NULL, source VARCHAR NOT NULL,
    day DATE NOT NULL
);
CREATE TABLE IF NOT EXISTS identity.ambiguous_values (  -- weak values several people carry: they link nothing
    id_value VARCHAR NOT NULL, day DATE NOT NULL
);
CREATE TABLE IF NOT EXISTS identity.crowded_values (  -- strong values too many accounts carry: they link nothing
    id_value VARCHAR NOT NULL, accounts BIGINT NOT NULL, day DATE NOT NULL  -- from this day on
);
CREATE TABLE IF NOT EXISTS identity.merges (  -- profiles that became one: merged_id is into_id from day on
    day DATE NOT NULL, merged_id VARCHAR NOT NULL, into_id VARCHAR NOT NULL, cause VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS identity.export_records (record VARCHAR NOT NULL, day DATE NOT NULL);
CREATE TABLE IF NOT EXISTS identity.graph_days (day DATE PRIMARY KEY);
CREATE VIEW IF NOT EXISTS identity.current_ids AS  -- the person each strong value resolves to now
SELECT id_value, arg_max(customer_id, linked_on) AS customer_id
FROM identity.id_graph WHERE strength = 'strong' GROUP BY id_value;
"""
DDL += touched.DDL  # the graph (graph.py) logs the people whose resolution a day changes


def linked_ids(people: str) -> str:
    """The identifiers that may find the people of `people` (a query of one column `person`, constant SQL): their
    ids and every value ever linked to them (the person a value finds is among the people it was linked to)."""
    return f"""SELECT person FROM ({people}) UNION
               SELECT id_value FROM identity.id_graph WHERE customer_id IN (SELECT person FROM ({people}))"""


def purchases_now(people: str = "", returned: bool = False) -> str:
    """Purchases with `user_id` the person now (a purchase keeps the person of its day in enriched_purchases; a later
    merge moves it): what the lifetime tables count, net of returns (with `returned`, returned ones too). With `people` (a query of one column `person`, constant SQL):
    only theirs, read through the identifiers ever linked to them, so an update reads their rows, not every one."""
    purchases, ids, mine = "loyalty.enriched_purchases", "identity.current_ids", ""
    if people:
        linked = linked_ids(people)
        purchases = f"(SELECT * FROM loyalty.enriched_purchases WHERE user_id IN ({linked}))"
        ids = f"""(SELECT id_value, arg_max(customer_id, linked_on) AS customer_id FROM identity.id_graph
                   WHERE strength = 'strong' AND id_value IN ({linked}) GROUP BY id_value)"""
        mine = f"AND coalesce(ids.customer_id, purchase.user_id) IN (SELECT person FROM ({people}))"
    return f"""
SELECT purchase.purchase_id, purchase.order_id, coalesce(ids.customer_id, purchase.user_id) AS user_id,
       purchase.product_id, purchase.category, purchase.price, purchase.purchased_at, purchase.source,
       purchase.store_id, purchase.day, purchase.customer_key, purchase.returned_at
FROM {purchases} AS purchase LEFT JOIN {ids} AS ids ON ids.id_value = purchase.user_id
WHERE {"true" if returned else "purchase.returned_at IS NULL"} {mine}
"""


PURCHASES_NOW = purchases_now()


# A customers export row's record: its place and its content, so a row edited in place is applied as a new record.
CUSTOMERS_RECORD = (
    "'customers:' || s3_key || ':' || row_no || ':' "
    "|| substr(md5(concat_ws('|', user_id, coalesce(email, ''), coalesce(name, ''))), 1, 12)"
)


def ids_as_of(values: str) -> str:
    """The person each strong identifier of `values` (a query of one column) resolves to at the end of $as_of."""
    return f"""SELECT id_value, arg_max(customer_id, linked_on) AS customer_id FROM identity.id_graph
               WHERE strength = 'strong' AND linked_on <= $as_of AND id_value IN ({values}) GROUP BY id_value"""


# Values that stand for "no value" in exports (compared with punctuation and spaces removed): never identifiers, or
# every customer without an email would be one person. So are values without a letter or digit and all-zero numbers.
PLACEHOLDERS = ["na", "nan", "none", "null", "nil", "unknown", "undefined", "notapplicable", "notavailable", "empty",
                "missing", "noemail", "nophone", "nocard"]  # fmt: skip


def is_placeholder(value: str, words: str = "true") -> str:
    """SQL: whether `value` (an expression, trimmed) is no identifier: a placeholder (its words where `words` holds),
    or in `$ignore` (lower-case)."""
    bare = f"regexp_replace(lower({value}), '[^\\p{{L}}\\p{{N}}]', '', 'g')"
    return f"""({bare} = '' OR regexp_matches({bare}, '^0+$') OR ({words} AND list_contains($placeholders, {bare}))
                OR list_contains($ignore, lower({value})))"""


def key_value(value: str) -> str:
    """SQL: the form in which a key or account id (`value`, trimmed) is found in the graph: an email lower-case."""
    return f"CASE WHEN {value} LIKE '%@%' THEN lower({value}) ELSE {value} END"


def link_spans(where: str = "") -> str:
    """Spans (warehouse.spans) of the person each strong identifier resolves to: (id, t, customer_id, until);
    `where`: more conditions on identity.id_graph's rows (constant SQL, never a value)."""
    # A value's strong rows of one day all name its one component: one customer_id per (id, t).
    return spans(
        "SELECT DISTINCT id_value AS id, linked_on AS t, customer_id FROM identity.id_graph "
        f"WHERE strength = 'strong' {where}"
    )


def with_person(table: str, links_before: str = "") -> str:
    """The rows of a raw table (a constant name) with `person`: whom their key resolved to on their day.
    `links_before`: an optional bound on the links read, e.g. "$end" (a parameter's name, never a value)."""
    bound = f"AND linked_on < {links_before}" if links_before else ""
    links = link_spans(f"{bound} AND id_value IN (SELECT user_id FROM {table})")
    return f"""SELECT r.*, coalesce(link.customer_id, r.user_id) AS person FROM {table} AS r
               LEFT JOIN ({links}) AS link ON link.id = r.user_id AND {in_span("link", "r.day")}"""
