"""The assets and checks, one module per domain (the definitions import them from here first)."""

import warnings

import dagster as dg

# single-run backfill policies are what make a year of history one step; their beta notice is noise here.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)  # Definitions.map_asset_specs sets the first day
