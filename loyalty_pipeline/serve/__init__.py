"""The serving store, the 360 app that reads it, and how a publish fills it."""
