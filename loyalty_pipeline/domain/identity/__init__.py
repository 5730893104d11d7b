"""The id graph: who is who across accounts, cards and emails."""
