"""The daily schedule: shortly after midnight UTC, build every day not built yet, through yesterday, in one run."""

from datetime import timedelta

import dagster as dg
import duckdb

from loyalty_pipeline.defs.automation import planning
from loyalty_pipeline.defs.automation.jobs import everything_job
from loyalty_pipeline.defs.ingest import ingest_assets
from loyalty_pipeline.defs.resources import EventSources, RulesResource, Warehouse


@dg.schedule(
    job=everything_job,
    cron_schedule="15 0 * * *",
    execution_timezone="UTC",
    description="Every day from the first one not built yet (the first day with events, on an empty warehouse) "
    "through yesterday (or the rules file's end_date), as one run over that range of daily partitions; skips, "
    "saying why, when all is built. The first tick catches up every day since the last one built: on a warehouse "
    "whose data stopped long ago, those empty days run too, so points expire and journey waits and exits come due "
    "as the rules say.",
)
def daily_materialization(
    context: dg.ScheduleEvaluationContext, sources: EventSources, warehouse: Warehouse, rules: RulesResource
) -> dg.RunRequest | dg.SkipReason:
    waiting = planning.run_in_flight(context.instance)
    if waiting:
        return dg.SkipReason(f"{waiting}; the next tick catches up")
    yesterday = (context.scheduled_execution_time - timedelta(days=1)).date()
    yesterday = rules.until_end_date(yesterday)  # no day after end_date is a partition
    try:
        built = planning.built_days(warehouse.database)
    except duckdb.IOException:
        return dg.SkipReason("the warehouse is being written by another process; the next tick catches up")
    if built.last:
        first = built.gap or built.last + timedelta(days=1)
    else:
        found = planning.input_days(sources, rules)
        if found is None:
            return dg.SkipReason("no events in the inputs yet")
        first = found[0]
    if first > yesterday:
        return dg.SkipReason(f"every day through {yesterday} is built")
    change = planning.Change(
        sources={key for asset in ingest_assets for key in asset.keys},
        first=first,
        last=yesterday,
        what=[f"daily catch-up {first}..{yesterday}"],
        versions=[str(context.scheduled_execution_time)],
    )
    return planning.run_request(
        context.repository_def, everything_job.name, change, built, (rules.first_day(), yesterday)
    )
