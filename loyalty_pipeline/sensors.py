"""Sensors: new S3 files request runs of the assets and partitions they feed."""

import json
from datetime import date

import dagster as dg

from loyalty_pipeline.assets.customer import customer_assets
from loyalty_pipeline.assets.ingest import HISTORICAL_FILE, customers, historical_purchases
from loyalty_pipeline.assets.loyalty import enriched_purchases
from loyalty_pipeline.partitions import daily_partitions
from loyalty_pipeline.resources import EventSources

historical_job = dg.define_asset_job(
    "ingest_historical_purchases",
    selection=dg.AssetSelection.assets(historical_purchases, enriched_purchases),
    partitions_def=daily_partitions,
    description="Load one day's historical_purchases CSV and enrich it.",
)
customers_job = dg.define_asset_job(
    "ingest_customers",
    selection=dg.AssetSelection.assets(customers, *customer_assets),
    description="Reload the customers export and refresh the 360 profiles.",
)


def _file_day(key: str) -> str | None:
    match = HISTORICAL_FILE.fullmatch(key)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1)).isoformat()
    except ValueError:
        return None


@dg.sensor(jobs=[historical_job, customers_job], minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
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
