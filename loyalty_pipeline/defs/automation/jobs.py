"""Jobs: everything (the CLI, the schedule, the sensors, backfills), and the two S3 exports alone, by hand."""

import dagster as dg

from loyalty_pipeline.defs.customers import customers
from loyalty_pipeline.defs.exports import historical_purchases

everything_job = dg.define_asset_job(
    "materialize_everything",
    selection=dg.AssetSelection.all(),
    description="Every asset and check for a day or a range of days (one run; days in order inside each step). "
    "The sensors run a subset of it: the assets downstream of the inputs that changed.",
)
# The two ingest jobs select their export alone: a job lists itself on the page of every asset it selects, and
# these would otherwise sit on the ledger's page. What follows from a changed file is the sensors' subset of
# materialize_everything.
historical_job = dg.define_asset_job(
    "ingest_historical_purchases",
    selection=dg.AssetSelection.assets(historical_purchases),
    description="Only the historical_purchases CSVs of a range of days, with their checks; the assets downstream "
    "run with materialize_everything (the s3_new_files sensor plans that run for changed files).",
)
customers_job = dg.define_asset_job(
    "ingest_customers",
    selection=dg.AssetSelection.assets(customers),
    description="Only the customers export, with its checks; the assets downstream run with materialize_everything "
    "(the s3_new_files sensor plans that run for a changed file).",
)
