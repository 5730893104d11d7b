"""Sensors: new S3 files and new Kafka snapshot files request runs of the assets and partitions they feed."""

import hashlib
import json
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from loyalty_pipeline import kafka
from loyalty_pipeline.assets.ingest import HISTORICAL_FILE
from loyalty_pipeline.jobs import customers_job, everything_job, historical_job
from loyalty_pipeline.resources import EventSources


def _file_day(key: str) -> str | None:
    match = HISTORICAL_FILE.fullmatch(key)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1)).isoformat()
    except ValueError:
        return None


@dg.sensor(
    jobs=[historical_job, customers_job], minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED
)
def s3_new_files(context: dg.SensorEvaluationContext, sources: EventSources) -> dg.SensorResult:
    """Each new or rewritten S3 file, once: historical_purchases/YYYY-MM-DD.csv runs that day; customers/*.csv the profiles.

    The cursor maps every key seen to its version (ETag, or mtime and size locally), so a restart neither
    misses nor repeats a file; run_key = key@version lets Dagster drop exact duplicates too.
    """
    seen = json.loads(context.cursor) if context.cursor else {}
    store = sources.object_store()
    requests, skipped = [], []
    for obj in store.list_objects("historical_purchases/") + store.list_objects("customers/"):
        if seen.get(obj.key) == obj.version:
            continue
        seen[obj.key] = obj.version
        run_key = f"{obj.key}@{obj.version}"
        if obj.key.startswith("customers/"):
            if obj.key.endswith(".csv"):
                requests.append(dg.RunRequest(run_key=run_key, job_name=customers_job.name))
            continue
        day = _file_day(obj.key)
        if day is None:
            skipped.append(obj.key)
            continue
        requests.append(dg.RunRequest(run_key=run_key, job_name=historical_job.name, partition_key=day))
    if skipped:
        context.log.warning(f"skipped files not named historical_purchases/YYYY-MM-DD.csv: {skipped}")
    cursor = json.dumps(seen, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason="no new files under historical_purchases/ or customers/", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)


@dg.sensor(job=everything_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def kafka_new_files(context: dg.SensorEvaluationContext, sources: EventSources) -> dg.SensorResult:
    """New or rewritten snapshot files under `<data dir>/kafka/<topic>/` request one run over the days they hold.

    Same cursor as the S3 sensor (path -> mtime and size). A file that is not *.jsonl / *.jsonl.gz, or that cannot
    be read, is logged and remembered, so it is reported once rather than failing every tick.
    """
    seen = json.loads(context.cursor) if context.cursor else {}
    fresh = []
    for path in sorted(Path(sources.data_dir, "kafka").glob("*/*")):
        stat = path.stat()
        version = f"{stat.st_mtime_ns}-{stat.st_size}"
        if not path.is_file() or seen.get(str(path)) == version:
            continue
        seen[str(path)] = version
        if path.parent.name not in kafka.TOPICS or not path.name.endswith((".jsonl", ".jsonl.gz")):
            context.log.warning(f"skipped {path}: not a *.jsonl or *.jsonl.gz snapshot of a known topic")
            continue
        fresh.append(path)
    cursor = json.dumps(seen, sort_keys=True)
    days = None
    for path in fresh:
        try:
            found = kafka.event_day_range([path])
        except duckdb.Error as error:
            context.log.error(f"skipped unreadable snapshot {path}: {error}")
            continue
        if found:
            days = found if days is None else (min(days[0], found[0]), max(days[1], found[1]))
    if days is None:
        return dg.SensorResult(skip_reason="no new Kafka snapshot files with events", cursor=cursor)
    first, last = (day.isoformat() for day in days)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"kafka:{first}..{last}:"
                + hashlib.sha1("\n".join(f"{p}@{seen[str(p)]}" for p in fresh).encode()).hexdigest()[:12],
                tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
            )
        ],
        cursor=cursor,
    )
