"""Text files read line by line in DuckDB, with exact line numbers (blank lines counted), .gz included."""

from pathlib import Path

import duckdb

# read_csv with a delimiter that valid JSON and our CSVs never contain gives one column per line; a blank line
# comes through as a NULL row, so numbering stays exact.
_ONE_COLUMN = (
    "columns = {'line': 'VARCHAR'}, header = false, delim = '\x1f', quote = '', escape = '', "
    "strict_mode = false, null_padding = true, auto_detect = false"
)


def load_lines(conn: duckdb.DuckDBPyConnection, files: list[Path], table: str) -> list[list[str]]:
    """Every line of `files` into temp table `table(file, line_no, line)`; returns [file, reason] of the files that
    could not be read (a broken gzip, say), whose lines are left out rather than failing the others."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {table} (file VARCHAR, line_no BIGINT, line VARCHAR)")
    unreadable = []
    for file in files:  # one file per read: its ordinality is the line number (3x faster than numbering a window)
        try:
            conn.execute(
                f"INSERT INTO {table} SELECT $file, ordinality, line FROM read_csv($file, {_ONE_COLUMN}) WITH ORDINALITY",
                {"file": str(file)},
            )
        except duckdb.Error as error:
            unreadable.append([str(file), f"unreadable file: {str(error).splitlines()[0]}"])
    return unreadable


def scan_sql(parameter: str) -> str:
    """A relation of the lines of the files in query parameter `parameter` (no line numbers), for quick scans."""
    return f"read_csv(${parameter}, {_ONE_COLUMN})"


# One CSV field: quoted (with "" inside) or bare; a line is fields joined by commas (RFC 4180, one line per row).
_FIELD = '(?:"(?:[^"]|"")*"|[^,"]*)'
CSV_LINE = f"^{_FIELD}(?:,{_FIELD})*$"
CSV_FIELDS = f"({_FIELD}),"


def load_csv(conn: duckdb.DuckDBPyConnection, copies: dict[str, Path], columns: list[str]) -> str:
    """CSV files (header first) into a temp table `(s3_key, line_no, row_no, raw, problem, <columns>)`, whose name
    it returns.

    Every non-blank data line is a row, with its text as written; `problem` says why a line is not a CSV row
    of `len(columns)` fields, or that its file's header is not the contract's. Empty fields are NULL.
    """
    unreadable = load_lines(conn, list(copies.values()), "csv_lines")
    conn.execute("CREATE OR REPLACE TEMP TABLE csv_files (s3_key VARCHAR, file VARCHAR)")
    conn.execute("CREATE OR REPLACE TEMP TABLE unreadable (file VARCHAR, reason VARCHAR)")
    if unreadable:
        conn.executemany("INSERT INTO unreadable VALUES ($1, $2)", unreadable)
    if copies:
        conn.executemany("INSERT INTO csv_files VALUES ($1, $2)", [[key, str(path)] for key, path in copies.items()])
    values = ", ".join(f"nullif(fields[{i + 1}], '') AS {column}" for i, column in enumerate(columns))
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE csv_rows AS
            WITH headers AS (
                SELECT file, line AS header FROM csv_lines WHERE line_no = 1
            ), parsed AS (
                SELECT s3_key, line_no, line, header,
                       regexp_full_match(line, $line_pattern) AS well_formed,
                       list_transform(regexp_extract_all(line || ',', $fields_pattern, 1),
                                      lambda f: CASE WHEN f LIKE '"%"' THEN replace(f[2:-2], '""', '"') ELSE f END) AS fields
                FROM csv_lines JOIN csv_files USING (file) JOIN headers USING (file)
                WHERE line_no > 1 AND trim(coalesce(line, '')) <> ''
            )
            SELECT s3_key, line_no, line_no - 1 AS row_no, line AS raw,
                   CASE WHEN lower(replace(trim(header), ' ', '')) <> $header
                        THEN 'file header is ' || trim(header) || ', expected ' || $header
                        WHEN NOT well_formed THEN 'not a valid CSV line (unbalanced quotes?)'
                        WHEN len(fields) <> $width THEN len(fields) || ' fields, expected ' || $width END AS problem,
                   {values}
            FROM parsed
            UNION ALL BY NAME  -- a file that cannot be read at all is one row, at line 0
            SELECT s3_key, 0 AS line_no, 0 AS row_no, unreadable.reason AS problem
            FROM unreadable JOIN csv_files USING (file)""",
        {"line_pattern": CSV_LINE, "fields_pattern": CSV_FIELDS, "width": len(columns), "header": ",".join(columns)},
    )
    return "csv_rows"
