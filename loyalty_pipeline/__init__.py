"""loyalty_pipeline: Kafka snapshots and S3 CSVs to loyalty and marketing tables, as Dagster assets over DuckDB."""

import warnings

import dagster as dg

# single-run backfill policies are what make a year of history one step; their beta notice is noise here.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)  # Definitions.map_asset_specs sets the first day
