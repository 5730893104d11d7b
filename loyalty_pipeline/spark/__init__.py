"""The Spark engine (LOYALTY_ENGINE=spark): DuckDB's statements run on Spark, and the portable SQL subset."""
