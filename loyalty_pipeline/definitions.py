"""The code location: assembles assets, checks, jobs, schedules, sensors and resources. No logic here."""

import dagster as dg

from loyalty_pipeline.assets.ingest import ingest_assets, ingest_checks
from loyalty_pipeline.assets.loyalty import loyalty_assets, loyalty_checks
from loyalty_pipeline.resources import build_resources

everything_job = dg.define_asset_job("materialize_everything", selection=dg.AssetSelection.all())

defs = dg.Definitions(
    assets=[*ingest_assets, *loyalty_assets],
    asset_checks=[*ingest_checks, *loyalty_checks],
    jobs=[everything_job],
    resources=build_resources(),
)
