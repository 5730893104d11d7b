"""The code location: assembles assets (with their checks), jobs, schedules, sensors and resources. No logic here."""

from collections.abc import Mapping

import dagster as dg

from loyalty_pipeline.defs.activation_exports import activation_export_assets
from loyalty_pipeline.defs.automation.jobs import customers_job, everything_job, historical_job
from loyalty_pipeline.defs.automation.partitions import with_days
from loyalty_pipeline.defs.automation.schedules import daily_materialization
from loyalty_pipeline.defs.automation.sensors import kafka_new_files, s3_new_files
from loyalty_pipeline.defs.customer import customer_assets
from loyalty_pipeline.defs.identity import identity_assets
from loyalty_pipeline.defs.ingest import ingest_assets
from loyalty_pipeline.defs.journey import journey_assets
from loyalty_pipeline.defs.loyalty import loyalty_assets
from loyalty_pipeline.defs.metadata import with_engine
from loyalty_pipeline.defs.points import points_assets
from loyalty_pipeline.defs.resources import build_resources
from loyalty_pipeline.defs.tiers import tier_assets

EVERYTHING_JOB = everything_job.name


def build_defs(env: Mapping[str, str] | None = None) -> dg.Definitions:
    """The Definitions, with resources from `env` (default: the process environment)."""
    resources = build_resources(env)
    start, last = resources["rules"].first_day(), resources["rules"].last_day()
    engine = resources["warehouse"].engine
    defs = dg.Definitions(
        assets=[
            *ingest_assets,
            *identity_assets,
            *loyalty_assets,
            *tier_assets,
            *points_assets,
            *customer_assets,
            *journey_assets,
            *activation_export_assets,
        ],
        jobs=[everything_job, historical_job, customers_job],
        schedules=[daily_materialization],
        sensors=[s3_new_files, kafka_new_files],
        resources=resources,
        # One process per run: DuckDB has one writer anyway, and a process per step costs ~4 s on 2 cores.
        executor=dg.in_process_executor,
    )
    return defs.map_asset_specs(func=lambda spec: with_engine(with_days(spec, start, last), engine))


@dg.definitions
def defs() -> dg.Definitions:
    """What `dagster dev` loads, from the process environment; lazily, so importing this module (the CLI does)
    never reads the environment's rules."""
    return build_defs()
