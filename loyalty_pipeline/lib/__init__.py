"""What every domain uses: the warehouse connection helpers, day chains and the change log."""
