"""Each domain's engine: its tables' SQL and rules. Nothing here imports Dagster."""
