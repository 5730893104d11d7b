"""Delivery of activations (docs/decisions.md, Delivery of activations): each day's journey.activations handed to
every destination of the rules file, as files in a folder or an S3 prefix or as batches POSTed to a webhook."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
from botocore.exceptions import BotoCoreError, ClientError

from loyalty_pipeline.defs.automation.partitions import DECLARED, window_days
from loyalty_pipeline.defs.errors import OneLineError
from loyalty_pipeline.defs.journey_checks import ACTIVATIONS_KEY
from loyalty_pipeline.defs.metadata import OWNERS, WAREHOUSE_POOL, bar_table, preview, table_metadata
from loyalty_pipeline.defs.resources import EventSources, RulesResource, Warehouse
from loyalty_pipeline.defs.stores import S3Store
from loyalty_pipeline.domain.config import Destination
from loyalty_pipeline.domain.journey import delivery
from loyalty_pipeline.lib.warehouse import count, transaction

EXPORTS_KEY = dg.AssetKey(["journey", "activation_exports"])
MATCH_CHECK = dg.AssetCheckSpec(
    "exports_match_activations",
    asset=EXPORTS_KEY,
    blocking=True,
    description="For the days written, each destination's rows as delivered (its files read back, day files plus "
    "corrections, each matching the checksum it was written with; for a webhook, the rows handed to it) equal its "
    "activations in journey.activations.",
)
WEBHOOK_RETRY = delivery.Retry()  # attempts, back-off and timeout of webhook batches (tests shorten the pauses)


def _place(destination: Destination, rules: RulesResource, sources: EventSources):
    """Where a destination's files go; None for a webhook. A relative folder is relative to the rules file's."""
    if destination.folder:
        base = Path(rules.path).parent if rules.path else Path()
        return delivery.Folder(base / destination.folder, destination.name)
    if destination.s3:
        store = S3Store(destination.s3, sources.s3_endpoint_url)
        return delivery.S3Prefix(store.client, store.bucket, store.prefix, destination.name)
    return None


def _require_activations(conn, first: date, end: date) -> None:
    """An empty file tells a consumer the day is done: never write one for a day whose activations are not built."""
    days = "SELECT day FROM journey.activation_days WHERE day >= $1 AND day < $2"
    exists = "SELECT 1 FROM duckdb_tables() WHERE schema_name = 'journey' AND table_name = 'activation_days'"
    built = count(conn, days, [first, end]) if count(conn, exists) else 0
    if built < (end - first).days:
        raise OneLineError(
            f"activation exports: journey/activations is not built for every day of {first}..{end - timedelta(days=1)}"
            "; materialize it for those days first (or with the exports, in one run)"
        )


def _deliver(context, conn, destination: Destination, place, first: date, end: date) -> dict:
    """Hands the window's files to one destination and records them; returns its counts."""
    deliveries = delivery.plan(conn, destination, first, end)
    now = datetime.now(UTC).replace(tzinfo=None)
    counts = {
        "rows": sum(len(d.rows) for d in deliveries if not d.correction),
        "files": len(deliveries),
        "corrections": sum(1 for d in deliveries if d.correction),
    }
    if place is not None:
        try:
            for each in deliveries:
                delivery.write(place, each)
        except (OSError, BotoCoreError, ClientError) as error:  # none recorded: the next run writes them again
            raise OneLineError(f"activation exports: destination {destination.name}: {error}") from None
        failed = None
    else:  # rows earlier runs could not deliver go first, in their order
        outbound = delivery.pending(conn, destination.name) + list(delivery.outbound(deliveries))
        counts["webhook_delivered"], failed = delivery.send(
            destination.webhook, outbound, destination.batch_size, WEBHOOK_RETRY
        )
        counts["webhook_failed"] = len(failed)
        if failed:
            context.log.warning(f"webhook {destination.name}: {len(failed)} rows not delivered ({failed[0][1]})")
    with transaction(conn):
        if failed is not None:
            delivery.keep_failures(conn, destination.name, failed, now)
        delivery.record(conn, destination, first, end, deliveries, context.run.run_id, now)
    return counts


def _match_check(conn, places: dict, destinations: list[Destination], first: date, end: date) -> dg.AssetCheckResult:
    differing, problems = {}, []
    for destination in destinations:
        rows, missing = delivery.readback(conn, destination, places[destination.name], first, end)
        differing[destination.name] = rows
        problems += [f"{destination.name}: {problem}" for problem in missing]
    return dg.AssetCheckResult(
        asset_key=EXPORTS_KEY,
        check_name=MATCH_CHECK.name,
        passed=not problems and not any(differing.values()),
        metadata={
            "rows_differing": sum(differing.values()),
            "files_missing_or_changed": len(problems),
            **({"problems": dg.MetadataValue.md("\n".join(f"* {p}" for p in problems[:20]))} if problems else {}),
        },
    )


@dg.asset(
    key=EXPORTS_KEY,
    deps=[ACTIVATIONS_KEY],
    check_specs=[MATCH_CHECK],
    group_name="journey",
    owners=OWNERS,
    kinds={"duckdb", "s3"},
    partitions_def=DECLARED,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
    description="Each day's activations delivered to the rules file's destinations: `activations/<name>/<day>.jsonl` "
    "and its manifest in a folder or S3, or JSON batches to a webhook; a changed day delivered before gets a "
    "correction file.",
)
def activation_exports(
    context: dg.AssetExecutionContext, warehouse: Warehouse, rules: RulesResource, sources: EventSources
):
    first, end = window_days(context)
    destinations = rules.rules.activations.destinations
    with warehouse.get_connection() as conn:
        _require_activations(conn, first, end)
        conn.execute(delivery.DDL)
        conn.execute(delivery.KEYED_ACTIVATIONS, {"first": first, "end": end})
        places = {destination.name: _place(destination, rules, sources) for destination in destinations}
        counts = {d.name: _deliver(context, conn, d, places[d.name], first, end) for d in destinations}
        totals = {
            name: sum(each.get(name, 0) for each in counts.values())
            for name in ("rows", "files", "corrections", "webhook_delivered", "webhook_failed")
        }
        pending = conn.execute("SELECT count(*) FROM journey.webhook_failures").fetchall()[0][0]
        return dg.MaterializeResult(
            metadata={
                **table_metadata(conn, "journey.activation_exports"),
                "destinations": len(destinations),
                "rows_written": totals["rows"],  # the day files' rows (corrections apart)
                "files_written": totals["files"],
                "corrections": totals["corrections"],
                "webhook_delivered": totals["webhook_delivered"],
                "webhook_failed": totals["webhook_failed"],
                "webhook_rows_waiting": pending,  # journey.webhook_failures: sent first next run
                "rows_per_destination": dg.MetadataValue.md(
                    bar_table(("destination", "rows"), [(name, each["rows"]) for name, each in counts.items()])
                ),
                "files": preview(
                    conn,
                    "SELECT destination, file, rows, sha256 FROM journey.activation_exports WHERE run_id = $1 "
                    "ORDER BY destination, day, correction",
                    [context.run.run_id],
                    limit=20,
                ),
            },
            check_results=[_match_check(conn, places, destinations, first, end)],
        )


activation_export_assets = [activation_exports]
