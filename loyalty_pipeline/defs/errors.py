"""The errors a user fixes, each one line naming what is wrong."""

import dagster as dg


class OneLineError(dg.Failure):
    """An error a user fixes, as one line naming what is wrong (a Failure, so a step shows the line, not a
    traceback)."""

    def __init__(self, message: str):
        super().__init__(description=message)

    def __str__(self) -> str:
        return self.description


class SourceError(OneLineError):
    """An input location that cannot be listed or read, or that lost the data it held."""


class WarehouseError(OneLineError):
    """The warehouse file cannot be opened."""
