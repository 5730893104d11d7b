"""Named SQL statements kept in `.sql` files beside the module that runs them.

A file holds statements one after the other, each starting at a line `-- name: <name>`. The comment lines directly
above that line say what the statement is for; the statement runs from the line after it to the next one's
comments. Parameters are bound when a statement runs (`$name` in DuckDB, `?` in SQLite): nothing is pasted in.
"""

import re
from pathlib import Path

_NAME = re.compile(r"^-- name: (\w+)$")


def load(module_file: str) -> dict[str, str]:
    """{name: statement text} of the `.sql` file named like `module_file` (a module's `__file__`)."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    pending: list[str] = []  # comment and blank lines not yet known to end a statement or start the next
    for line in Path(module_file).with_suffix(".sql").read_text().splitlines():
        match = _NAME.match(line)
        if match:
            found[match.group(1)] = current = []
            pending = []
        elif current is not None and (not line.strip() or line.startswith("--")):
            pending.append(line)
        elif current is not None:
            current += pending + [line]
            pending = []
    return {name: "\n" + "\n".join(lines) + "\n" for name, lines in found.items()}
