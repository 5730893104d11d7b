"""Jobs: everything (the CLI, the schedule, backfills) and the two narrow ones the S3 sensor requests."""

import dagster as dg

from loyalty_pipeline.assets.customer import customer_assets
from loyalty_pipeline.assets.ingest import customers, historical_purchases
from loyalty_pipeline.assets.loyalty import enriched_purchases
from loyalty_pipeline.partitions import daily_partitions

everything_job = dg.define_asset_job(
    "materialize_everything",
    selection=dg.AssetSelection.all(),
    partitions_def=daily_partitions,
    description="Every asset and check for a day or a range of days (one run; days in order inside each step).",
)
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
