"""Journeys: user-written criteria and the day-by-day state."""
