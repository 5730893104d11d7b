"""The daily partitions every time-dependent asset shares: UTC event dates."""

import os

import dagster as dg

# Events before this date are quarantined rather than silently ignored; override for older history.
# end_offset=1 makes today a partition too, so events of the current day can be materialized.
START_DATE = os.environ.get("LOYALTY_START_DATE", "2000-01-01")

daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone="UTC", end_offset=1)
