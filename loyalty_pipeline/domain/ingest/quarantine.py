"""The quarantine (raw.rejected_records): each rejected input row with its location and reason."""

from datetime import date

from loyalty_pipeline.lib.warehouse import count


def quarantine(conn, source: str, first: date, end: date, rejects_sql: str, undated_of: str = "true") -> int:
    """Replace the window's rejections of one source, and its undated ones matching SQL predicate `undated_of`."""
    conn.execute(
        "DELETE FROM raw.rejected_records WHERE source = $source "
        f"AND ((day IS NULL AND {undated_of}) OR (day >= $first AND day < $end))",
        {"source": source, "first": first, "end": end},
    )
    conn.execute(
        f"INSERT INTO raw.rejected_records SELECT $source, location, reason, raw, day FROM ({rejects_sql}) "
        "WHERE day IS NULL OR (day >= $first AND day < $end)",
        {"source": source, "first": first, "end": end},
    )
    return count(conn, "SELECT 1 FROM raw.rejected_records WHERE source = $1", [source])
