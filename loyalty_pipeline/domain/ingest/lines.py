"""Text files read line by line in DuckDB, with exact line numbers (blank lines counted), .gz included."""

import gzip
import zlib
from pathlib import Path

import duckdb

# read_csv with a delimiter that no text contains gives one column per line (four control characters in a row: a
# line holding one of them is not cut there); a blank line comes through as a NULL row, so numbering stays exact.
_ONE_COLUMN = (
    "columns = {'line': 'VARCHAR'}, header = false, delim = '\x1f\x1e\x1d\x1c', quote = '', escape = '', "
    "strict_mode = false, null_padding = true, auto_detect = false"
)


def load_lines(conn: duckdb.DuckDBPyConnection, files: list[Path], table: str) -> list[list]:
    """Every line of `files` into temp table `table(file, line_no, line)`; returns the problems [file, line_no,
    reason] of what could not be read: a line that is not UTF-8, or (line 0) a file that is not what its name says
    or ends early, whose readable lines still load. One bad byte never costs the file's other lines."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {table} (file VARCHAR, line_no BIGINT, line VARCHAR)")
    problems = []
    for file in files:  # one file per read: its ordinality is the line number (3x faster than numbering a window)
        try:
            conn.execute(
                f"INSERT INTO {table} SELECT $file, ordinality, line FROM read_csv($file, {_ONE_COLUMN}) WITH ORDINALITY",
                {"file": str(file)},
            )
        except duckdb.Error:  # a bad byte, a line over DuckDB's limit, a broken gzip: read it line by line
            rows, file_problems = _read_in_python(file)
            if rows:
                conn.executemany(f"INSERT INTO {table} VALUES ($1, $2, $3)", rows)
            problems += file_problems
    return problems


def _read_in_python(file: Path) -> tuple[list[list], list[list]]:
    """The lines of a file DuckDB could not read: ([file, line_no, text] of the readable ones, problems)."""
    rows, problems = [], []
    opener = gzip.open if file.name.lower().endswith(".gz") else open
    try:
        with opener(file, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    rows.append([str(file), number, raw.rstrip(b"\r\n").decode("utf-8")])
                except UnicodeDecodeError as error:
                    problems.append([str(file), number, f"not UTF-8 text ({error.reason} at byte {error.start})"])
    except (OSError, EOFError, zlib.error) as error:
        problems.append([str(file), 0, f"unreadable file: {error}"])  # the lines before the break still load
    return rows, problems


def scan_sql(parameter: str) -> str:
    """A relation of the lines of the files in query parameter `parameter` (no line numbers), for quick scans."""
    return f"read_csv(${parameter}, {_ONE_COLUMN})"


# The longest line read as a row or message (Kafka's default message size limit): DuckDB evaluates a line in
# several copies at once, so a far longer one (a 30 MB field) could exhaust the memory limit.
MAX_LINE_BYTES = 1_048_576
# What a quarantined line's `raw` keeps of a line over that size.
KEPT_OF_LONG_LINE = 1000

# One CSV field: quoted (with "" inside) or bare; a line is fields joined by commas (RFC 4180, one line per row).
_FIELD = '(?:"(?:[^"]|"")*"|[^,"]*)'
CSV_LINE = f"^{_FIELD}(?:,{_FIELD})*$"
CSV_FIELDS = f"({_FIELD}),"


def load_csv(
    conn: duckdb.DuckDBPyConnection, copies: dict[str, Path], columns: list[str], optional: tuple[str, ...] = ()
) -> str:
    """CSV files (header first) into a temp table `(s3_key, line_no, row_no, raw, problem, <columns>)`, whose name
    it returns.

    Every non-blank data line is a row, with its text as written; `problem` says why a line is not a CSV row
    of as many fields as its header, or that its file's header is not the contract's: every column but the
    `optional` ones, in the contract's order, and no other. Empty fields and columns a file does not have are NULL.
    """
    unreadable = load_lines(conn, list(copies.values()), "csv_lines")
    conn.execute("CREATE OR REPLACE TEMP TABLE csv_files (s3_key VARCHAR, file VARCHAR)")
    conn.execute("CREATE OR REPLACE TEMP TABLE unreadable (file VARCHAR, line_no BIGINT, reason VARCHAR)")
    if unreadable:
        conn.executemany("INSERT INTO unreadable VALUES ($1, $2, $3)", unreadable)
    if copies:
        conn.executemany("INSERT INTO csv_files VALUES ($1, $2)", [[key, str(path)] for key, path in copies.items()])
    values = ", ".join(
        f"CASE WHEN list_position(names, '{column}') > 0 THEN nullif(fields[list_position(names, '{column}')], '') END "
        f"AS {column}"
        for column in columns
    )
    expected = ",".join(columns) + (f" (optional: {','.join(optional)})" if optional else "")
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE csv_rows AS
            WITH headers AS (
                SELECT file, line AS header, string_split(lower(replace(trim(line), ' ', '')), ',') AS names
                FROM csv_lines WHERE line_no = 1
            ), parsed AS (
                SELECT s3_key, line_no, line, header, names, strlen(line) > $max_bytes AS too_long,
                       regexp_full_match(line, $line_pattern) AS well_formed,
                       CASE WHEN NOT too_long THEN list_transform(
                           regexp_extract_all(line || ',', $fields_pattern, 1),
                           lambda f: CASE WHEN f LIKE '"%"' THEN replace(f[2:-2], '""', '"') ELSE f END) END AS fields
                FROM csv_lines JOIN csv_files USING (file) LEFT JOIN headers USING (file)
                WHERE line_no > 1 AND trim(coalesce(line, '')) <> ''
            )
            SELECT s3_key, line_no, line_no - 1 AS row_no,
                   CASE WHEN too_long THEN left(line, $kept) ELSE line END AS raw,
                   CASE WHEN too_long THEN 'line of ' || strlen(line) || ' bytes: a row is at most ' || $max_bytes || ' bytes'
                        WHEN header IS NULL OR NOT list_has_all(names, $required)
                             OR names <> list_filter($columns, lambda c: list_contains(names, c))
                        THEN 'file header is ' || coalesce(trim(header), 'unreadable') || ', expected ' || $expected
                        WHEN NOT well_formed THEN 'not a valid CSV line (unbalanced quotes?)'
                        WHEN len(fields) <> len(names) THEN len(fields) || ' fields, expected ' || len(names)
                   END AS problem,
                   {values}
            FROM parsed
            UNION ALL BY NAME  -- what cannot be read: a line, or (line 0) the file
            SELECT s3_key, line_no, greatest(line_no - 1, 0) AS row_no, unreadable.reason AS problem
            FROM unreadable JOIN csv_files USING (file)""",
        {
            "line_pattern": CSV_LINE,
            "fields_pattern": CSV_FIELDS,
            "columns": columns,
            "required": [column for column in columns if column not in optional],
            "expected": expected,
            "max_bytes": MAX_LINE_BYTES,
            "kept": KEPT_OF_LONG_LINE,
        },
    )
    return "csv_rows"
