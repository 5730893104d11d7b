"""The daily partitions every time-dependent asset shares: UTC event dates from the configured first day."""

from datetime import date, timedelta

import dagster as dg

DEFAULT_START = date(2000, 1, 1)  # when neither loyalty.yaml's start_date nor LOYALTY_START_DATE says


def daily_partitions(start: date = DEFAULT_START, last: date | None = None) -> dg.DailyPartitionsDefinition:
    """Days from `start` through `last` (the rules' end_date), else through today: end_offset=1 makes today a
    partition too, so events of the current day can be materialized."""
    if last is None:
        return dg.DailyPartitionsDefinition(start_date=start.isoformat(), timezone="UTC", end_offset=1)
    end = (last + timedelta(days=1)).isoformat()  # Dagster's end_date is the first day not in the set
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), end_date=end, timezone="UTC")


# What the asset modules declare; build_defs swaps in the configured first day (Definitions.map_asset_specs), so
# the start date follows the rules file of the Definitions being built rather than the importing process.
DECLARED = daily_partitions()


def with_days(spec: dg.AssetSpec, start: date, last: date | None) -> dg.AssetSpec:
    return spec.replace_attributes(partitions_def=daily_partitions(start, last)) if spec.partitions_def else spec


def first_day(context: dg.AssetExecutionContext) -> date:
    """The first partition of the running asset: older events belong to no partition and are quarantined."""
    return context.assets_def.partitions_def.start.date()


def window_days(context: dg.AssetExecutionContext) -> tuple[date, date]:
    """[first day, day after the last) of the partitions this step materializes."""
    window = context.partition_time_window
    return window.start.date(), window.end.date()
