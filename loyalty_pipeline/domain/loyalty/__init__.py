"""Purchases enriched at event time, returns, and the lifetime tables (tiers, stamps, promotions)."""
