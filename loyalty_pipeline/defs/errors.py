"""The errors a user fixes, each one line naming what is wrong."""

import dagster as dg

from loyalty_pipeline.lib.chain import DayOrderError


class OneLineError(dg.Failure):
    """An error a user fixes, as one line naming what is wrong: a Failure, whose description the CLI prints alone
    and the UI shows above Dagster's trace."""

    def __init__(self, message: str, metadata: dict | None = None):
        super().__init__(description=message, metadata=metadata)

    def __str__(self) -> str:
        return self.description


class SourceError(OneLineError):
    """An input location that cannot be listed or read, or that lost the data it held."""


class WarehouseError(OneLineError):
    """The warehouse file cannot be opened."""


class DayRefused(OneLineError):
    """A day refused for the order of its days (lib.chain.DayOrderError): the message and the metadata name the
    range to materialize as one run instead."""

    def __init__(self, error: DayOrderError):
        first, last = error.run_instead
        super().__init__(str(error), {"run_instead_from": str(first), "run_instead_to": str(last)})
