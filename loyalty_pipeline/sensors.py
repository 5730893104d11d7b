"""Sensors: new, rewritten or removed input files request one run of everything they feed (see planning.py).

Each sensor's cursor maps every file it has seen to its version (ETag, or mtime and size locally), and for Kafka
snapshots the days the file held, so a restart neither misses nor repeats a file, and a rewritten file re-runs
the days it used to hold as well as the new ones. While a run is in progress a tick waits (cursor unchanged):
the next tick plans on the settled warehouse.
"""

import json
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb

from loyalty_pipeline import kafka, planning
from loyalty_pipeline.assets.ingest import customers, dated_file, historical_purchases, raw_topics, s3_returns
from loyalty_pipeline.jobs import everything_job
from loyalty_pipeline.resources import EventSources, RulesResource, Warehouse, file_version

TICK_SECONDS = 15


def _days(entry: list) -> tuple[date, date] | None:
    """The days of a Kafka cursor entry [version, first day, last day]."""
    return (date.fromisoformat(entry[1]), date.fromisoformat(entry[2])) if entry[1] else None


def _plan(
    context: dg.SensorEvaluationContext,
    change: planning.Change,
    cursor: dict,
    warehouse: Warehouse,
    rules: RulesResource,
) -> dg.SensorResult:
    """The run `change` needs on the settled warehouse, and the cursor that remembers it was requested."""
    try:
        built = planning.built_days(warehouse.database)
    except duckdb.IOException:
        return dg.SensorResult(skip_reason="the warehouse is being written by another process; trying next tick")
    today = datetime.now(UTC).date()  # the last day partition
    request = planning.run_request(
        context.repository_def, everything_job.name, change, built, (rules.first_day(), today)
    )
    cursor = json.dumps(cursor, sort_keys=True)
    if request is None:
        return dg.SensorResult(skip_reason=f"nothing to run for {', '.join(change.what)}", cursor=cursor)
    return dg.SensorResult(run_requests=[request], cursor=cursor)


@dg.sensor(
    job=everything_job,
    minimum_interval_seconds=TICK_SECONDS,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Kafka snapshot files under <data dir>/kafka/<topic>/ that are new, rewritten or removed: one run "
    "over the days they hold through the last built day, of their topics and everything downstream.",
)
def kafka_new_files(
    context: dg.SensorEvaluationContext, sources: EventSources, warehouse: Warehouse, rules: RulesResource
) -> dg.SensorResult:
    waiting = planning.run_in_flight(context.instance)
    if waiting:
        return dg.SensorResult(skip_reason=waiting)
    # path -> [version, first day, last day]; a cursor of older releases held the version alone
    seen = {
        path: entry if isinstance(entry, list) else [entry, None, None]
        for path, entry in json.loads(context.cursor or "{}").items()
    }
    now, change = {}, planning.Change()
    for topic, asset in raw_topics.items():
        for path in sources.kafka_files(topic):
            version, before = file_version(path), seen.get(str(path))
            if before and before[0] == version:
                now[str(path)] = before
                continue
            days = kafka.event_day_range([path], rules.first_day(), rules.latest_event_time())
            now[str(path)] = [version, *(day.isoformat() if day else None for day in days or (None, None))]
            change.add(asset.key, f"{path} ({'rewritten' if before else 'new'})", version, days)
            if before and before[1]:  # the days it held before count too
                change.add(asset.key, f"{path} (before)", before[0], _days(before))
    for path, before in seen.items():
        if path not in now:
            change.add(raw_topics[Path(path).parent.name].key, f"{path} (removed)", before[0], _days(before))
    if not change:
        return dg.SensorResult(
            skip_reason="no new, rewritten or removed Kafka snapshot files", cursor=json.dumps(now, sort_keys=True)
        )
    return _plan(context, change, now, warehouse, rules)


@dg.sensor(
    job=everything_job,
    minimum_interval_seconds=TICK_SECONDS,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="S3 files: a new, rewritten or removed historical_purchases/ or returns/YYYY-MM-DD.csv runs that day through the "
    "last built day; a customers/*.csv export refreshes everything downstream of the customers.",
)
def s3_new_files(
    context: dg.SensorEvaluationContext, sources: EventSources, warehouse: Warehouse, rules: RulesResource
) -> dg.SensorResult:
    waiting = planning.run_in_flight(context.instance)
    if waiting:
        return dg.SensorResult(skip_reason=waiting)
    seen = json.loads(context.cursor) if context.cursor else {}
    store = sources.object_store()
    now = {
        obj.key: obj.version
        for prefix in ("historical_purchases/", "returns/", "customers/")
        for obj in store.list_objects(prefix)
    }
    change, skipped = planning.Change(), []
    for key in sorted(set(now) | set(seen)):
        if now.get(key) == seen.get(key):
            continue
        what = f"{key} ({'removed' if key not in now else 'rewritten' if key in seen else 'new'})"
        if key.startswith("customers/"):
            if key.endswith(".csv"):
                change.add(customers.key, what, now.get(key, "removed"))
                change.whole_history = True
        elif (dated := dated_file(key)) is not None:
            export, day = dated
            asset = historical_purchases if export == "historical_purchases" else s3_returns
            change.add(asset.key, what, now.get(key, "removed"), (day, day))
        else:
            skipped.append(key)
    if skipped:
        context.log.warning(f"skipped files not named historical_purchases/ or returns/YYYY-MM-DD.csv: {skipped}")
    if not change:
        return dg.SensorResult(
            skip_reason="no new files under historical_purchases/, returns/ or customers/",
            cursor=json.dumps(now, sort_keys=True),
        )
    return _plan(context, change, now, warehouse, rules)
