"""loyalty_pipeline: Kafka snapshots and S3 CSVs to loyalty and marketing tables, as Dagster assets over DuckDB.

The Dagster wiring (definitions, assets, checks, sensors, schedules, jobs, resources, planning, runs, metadata)
imports Dagster; the domain modules (the SQL of each table, the warehouse helpers, the serving store and the app)
do not, so they can be read, tested and reused without it (test_definitions checks it).
"""
