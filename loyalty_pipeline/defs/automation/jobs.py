"""Jobs: everything (the CLI, the schedule, the sensors, backfills), and two closures to run by hand from the UI."""

import dagster as dg

from loyalty_pipeline.defs.customers import customers
from loyalty_pipeline.defs.exports import historical_purchases

everything_job = dg.define_asset_job(
    "materialize_everything",
    selection=dg.AssetSelection.all(),
    description="Every asset and check for a day or a range of days (one run; days in order inside each step). "
    "The sensors run a subset of it: the assets downstream of the inputs that changed.",
)
historical_job = dg.define_asset_job(
    "ingest_historical_purchases",
    selection=dg.AssetSelection.assets(historical_purchases).downstream(),
    description="historical_purchases CSVs for a range of days and everything downstream of them "
    "(run it from the day of a changed file through the last built day).",
)
customers_job = dg.define_asset_job(
    "ingest_customers",
    selection=dg.AssetSelection.assets(customers).downstream(),
    description="The customers export and everything downstream of it (run it over every built day).",
)
