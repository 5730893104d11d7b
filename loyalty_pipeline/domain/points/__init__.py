"""The append-only point ledger and the balances read from it."""
