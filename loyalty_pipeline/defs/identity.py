"""Identity resolution as an asset: the id graph that makes one person one profile across keys, ids and emails."""

import dagster as dg

from loyalty_pipeline.defs.automation.partitions import DECLARED, window_days
from loyalty_pipeline.defs.checks import check, check_results, check_specs, duplicate_check, in_days
from loyalty_pipeline.defs.customers import customers
from loyalty_pipeline.defs.exports import historical_purchases
from loyalty_pipeline.defs.ingest import raw_topics
from loyalty_pipeline.defs.metadata import (
    OWNERS,
    PORTABLE_KINDS,
    WAREHOUSE_POOL,
    partition_metadata,
    preview,
    table_metadata,
)
from loyalty_pipeline.defs.resources import RulesResource, Warehouse
from loyalty_pipeline.domain.identity import graph, identity
from loyalty_pipeline.lib.chain import open_window
from loyalty_pipeline.lib.warehouse import SOURCE_FILES_DDL, count

ID_GRAPH_KEY = dg.AssetKey(["identity", "id_graph"])


# Weak values several people carry: they link nothing new (links made before stay). Those that became ambiguous in
# the days written (`where` on the day; the earlier ones were listed when theirs were), with every account carrying
# them, as the person each resolves to now.
def ambiguous(where: str) -> str:
    return f"""
WITH carried AS (
    SELECT id_type, id_value, account FROM identity.weak_values
    WHERE id_value IN (SELECT id_value FROM identity.ambiguous_values WHERE {where})
), resolved AS (  -- identity.current_ids, read for these accounts only
    SELECT id_value, arg_max(customer_id, linked_on) AS customer_id FROM identity.id_graph
    WHERE strength = 'strong' AND id_value IN (SELECT account FROM carried) GROUP BY id_value
)
SELECT c.id_type, c.id_value, list_sort(list(DISTINCT coalesce(resolved.customer_id, c.account))) AS accounts
FROM carried AS c LEFT JOIN resolved ON resolved.id_value = c.account
GROUP BY ALL
"""


@check("Weak identifiers (names) carried by several accounts link nothing; lists them.", blocking=False)
def ambiguous_weak_values(conn, rules, days) -> tuple[bool, dict]:
    where, params = in_days("day", days)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE ambiguous_found AS {ambiguous(where)}", params)
    found = conn.execute("SELECT id_type, id_value, accounts FROM ambiguous_found ORDER BY ALL LIMIT 50").fetchall()
    return not found, {
        "ambiguous_values": count(conn, "SELECT 1 FROM ambiguous_found"),
        "values": dg.MetadataValue.json([{"type": t, "value": v, "accounts": a} for t, v, a in found]),
    }


@check(
    "Values more accounts carry than identity.max_accounts_per_value allows link nothing from the day they "
    "would have; lists them.",
    blocking=False,
)
def crowded_values(conn, rules, days) -> tuple[bool, dict]:
    found = conn.execute(
        "SELECT id_value, accounts, day::VARCHAR FROM identity.crowded_values ORDER BY day, id_value LIMIT 50"
    ).fetchall()
    return not found, {
        "crowded_values": count(conn, "SELECT 1 FROM identity.crowded_values"),
        "values": dg.MetadataValue.json([{"value": v, "accounts": a, "since": d} for v, a, d in found]),
    }


CHECKS = [
    ambiguous_weak_values,
    crowded_values,
    duplicate_check(ID_GRAPH_KEY, ["id_type", "id_value", "linked_on"], "linked_on"),
]


@dg.asset(
    key=ID_GRAPH_KEY,
    check_specs=check_specs(ID_GRAPH_KEY, CHECKS),
    group_name="identity",
    owners=OWNERS,
    kinds=PORTABLE_KINDS,
    partitions_def=DECLARED,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
    deps=[
        *(raw_topics[topic] for topic in ("users", "purchases", "redemptions", "user_activity")),
        historical_purchases,
        customers,
        dg.AssetDep(
            ID_GRAPH_KEY,
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
            ),
        ),
    ],
    description="Every identifier (account id, email, card, phone, name, event key) and the person it resolves to, "
    "from the day it was linked; merges in identity.merges. Day D builds on the end of D-1.",
)
def id_graph(context: dg.AssetExecutionContext, warehouse: Warehouse, rules: RulesResource) -> dg.MaterializeResult:
    first, end = window_days(context)
    merges = 0
    with warehouse.get_connection(portable=True) as conn:
        conn.execute(identity.DDL + SOURCE_FILES_DDL)
        window = open_window(
            conn, "identity.graph_days", "id graph", "graph", first, end, graph.first_event_before(conn, first)
        )
        window.begin(conn)
        for day in window.days:  # in order: each day links to the people the previous days resolved
            merges += graph.build_day(conn, rules.rules.identity, window, day)["merges"]
        window_rows = "SELECT * FROM identity.id_graph WHERE linked_on >= $1 AND linked_on < $2"
        return dg.MaterializeResult(
            metadata={
                **table_metadata(conn, "identity.id_graph"),
                **partition_metadata(conn, "identity.id_graph", "linked_on", first, end),
                "people": count(
                    conn,
                    "SELECT DISTINCT customer_id FROM identity.id_graph WHERE customer_id NOT IN "
                    "(SELECT merged_id FROM identity.merges)",
                ),
                "merges": merges,
                "preview": preview(conn, window_rows + " ORDER BY customer_id, id_type, id_value", [first, end], 20),
            },
            check_results=check_results(ID_GRAPH_KEY, CHECKS, conn, rules, (first, end)),
        )


identity_assets = [id_graph]
