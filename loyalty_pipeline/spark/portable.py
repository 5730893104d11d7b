"""The portable subset of DuckDB SQL: what a step downstream of ingest may run, so that DuckDB and Spark (spark.py)
give the same rows. `problems(sql)` lists what falls outside it; the tests run it over every statement those steps
emit on the demo.

Each rule names something that either does not run on Spark once transpiled by sqlglot, or runs and silently gives
other results, and says what to write instead.
"""

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

# DuckDB functions with no Spark counterpart of the same meaning, as sqlglot transpiles them.
FUNCTIONS = {
    "json_valid": "has no Spark form: parse in ingest (DuckDB)",
    "json_type": "has no Spark form: parse in ingest (DuckDB)",
    "to_days": "has no Spark form: $n * INTERVAL 1 DAY",
    "unix_to_time": "epoch_ms() differs on Spark: convert in ingest (DuckDB)",
}
RANKED = {"row_number", "rank", "dense_rank", "ntile", "lag", "lead"}  # window functions Spark runs only ordered
# Functions sqlglot does not know that `to_spark` writes in their Spark form (to_json has its own rule).
KNOWN = {"list_slice", "list_sum", "list_has_all", "to_json"}
STATEMENTS = (
    exp.Query,
    exp.Insert,
    exp.Delete,
    exp.Update,
    exp.Create,
    exp.Alter,
    exp.Drop,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
)
CREATED = ("TABLE", "SCHEMA", "VIEW")  # no macros, indexes, sequences or types
TIMES = ("day", "date", "_on")  # column names ending so hold dates: their difference differs (integer / interval)


def problems(sql: str) -> list[str]:
    """What in `sql` (one or more DuckDB statements) is outside the portable subset; [] when nothing is."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except SqlglotError as error:
        return [f"does not parse: {str(error).splitlines()[0]}"]
    found = []
    for statement in (s for s in statements if not isinstance(s, exp.Semicolon)):
        found += _statement(statement) + [message for node in statement.walk() for message in _node(node)]
        names = [cte.alias for cte in statement.find_all(exp.CTE)]
        if len(names) != len(set(names)):  # Spark hoists a subquery's WITH into the statement's
            found.append("a CTE name used twice in one statement (nested WITH): Spark hoists them into one WITH")
        try:
            sqlglot.parse_one(to_spark(statement), read="spark")
        except SqlglotError as error:
            found.append(f"no Spark form: {str(error).splitlines()[0]}")
    return sorted(set(found))


def to_spark(statement: exp.Expression) -> str:
    """Spark SQL of a DuckDB statement. Beyond sqlglot's transpiling, what would silently differ is written in its
    Spark form: positional parameters $1 become :p1 (Spark names every parameter), and list positions, which count
    from 1 in DuckDB and from 0 in Spark, stay 1-based, and DuckDB's list functions keep their NULL rules."""
    statement = statement.copy()
    for placeholder in statement.find_all(exp.Placeholder):
        if placeholder.name.isdigit():
            placeholder.set("this", f"p{placeholder.name}")
    for form in (_one_based_index, _one_based_position, _list_slice, _list_sum, _list_has, _list_concat):
        statement = statement.transform(form)
    return statement.sql("spark", unsupported_level=ErrorLevel.RAISE)


def _one_based_index(node: exp.Expression) -> exp.Expression:
    """`lambda x, i: ...` counts i from 1; Spark's (x, i) -> ... from 0: the body reads i + 1."""
    if not (isinstance(node, exp.Lambda) and len(node.expressions) == 2):
        return node
    index = node.expressions[1].name
    body = node.this.transform(
        lambda n: (
            exp.paren(exp.Add(this=n.copy(), expression=exp.Literal.number(1)))
            if isinstance(n, exp.Identifier) and n.name == index
            else n
        )
    )
    return exp.Lambda(this=body, expressions=node.expressions)


def _one_based_position(node: exp.Expression) -> exp.Expression:
    """list[i] counts from 1; sqlglot shifts only constant positions, so a computed one becomes element_at (1-based
    on Spark too)."""
    if isinstance(node, exp.Bracket) and len(node.expressions) == 1:
        position = node.expressions[0]
        if not (position.is_number or isinstance(position, exp.Neg) or position.is_string):
            return exp.Anonymous(this="element_at", expressions=[node.this, position])
    return node


def _list_slice(node: exp.Expression) -> exp.Expression:
    """list_slice(list, start, end), both counted from 1, is slice(list, start, length) on Spark."""
    if _function(node) != "list_slice":
        return node
    items, start, end = node.expressions
    length = exp.func(
        "greatest", exp.Sub(this=exp.Add(this=end, expression=exp.Literal.number(1)), expression=start), 0
    )
    return exp.Anonymous(this="slice", expressions=[items, start, length])


def _list_sum(node: exp.Expression) -> exp.Expression:
    """list_sum(list) of integers is an aggregate on Spark; NULL when no element is non-NULL, as in DuckDB."""
    if _function(node) != "list_sum":
        return node
    x, total = exp.to_identifier("x"), exp.to_identifier("total")
    present = exp.Lambda(this=exp.not_(exp.Is(this=x, expression=exp.null())), expressions=[x])
    add = exp.Lambda(this=exp.func("coalesce", total, 0) + x, expressions=[total, x])
    present_items = exp.Anonymous(this="filter", expressions=[node.expressions[0], present])
    return exp.Anonymous(this="aggregate", expressions=[present_items, exp.cast(exp.null(), "BIGINT"), add])


def _list_has(node: exp.Expression) -> exp.Expression:
    """list_has_any (sqlglot's && on Spark, which Spark lacks) and list_has_all, as Spark's array functions."""
    if isinstance(node, exp.ArrayOverlaps):
        return exp.Anonymous(this="arrays_overlap", expressions=[node.this, node.expression])
    if _function(node) == "list_has_all":  # every element of the second is in the first; NULL for a NULL list
        have, wanted = node.expressions
        missing = exp.Anonymous(
            this="size", expressions=[exp.Anonymous(this="array_except", expressions=[wanted, have])]
        )
        either_null = exp.or_(
            exp.Is(this=have.copy(), expression=exp.null()), exp.Is(this=wanted.copy(), expression=exp.null())
        )
        return exp.Case(
            ifs=[exp.If(this=either_null, true=exp.null())],
            default=exp.EQ(this=missing, expression=exp.Literal.number(0)),
        )
    return node


def _list_concat(node: exp.Expression) -> exp.Expression:
    """list_concat reads a NULL list as empty; Spark's concat gives NULL."""
    if not (isinstance(node, exp.ArrayConcat) and node.args.get("null_propagation") is False):
        return node
    lists = [node.this, *node.expressions]
    empty = exp.Array(expressions=[])
    return exp.Anonymous(
        this="concat", expressions=[exp.func("coalesce", items.copy(), empty.copy()) for items in lists]
    )


def _statement(statement: exp.Expression) -> list[str]:
    if not isinstance(statement, STATEMENTS):
        return [f"{type(statement).__name__} statement: not run by the Spark engine"]
    if isinstance(statement, exp.Create) and statement.kind not in CREATED:
        return [f"CREATE {statement.kind}: DuckDB's alone; write the SQL where it is used"]
    if isinstance(statement, exp.Insert) and statement.args.get("alternative"):
        return [f"INSERT OR {statement.args['alternative']}: delete the rows first, then insert"]
    if isinstance(statement, exp.Update) and statement.args.get("from_"):
        return ["UPDATE ... FROM: SET the column to a correlated subquery"]
    if isinstance(statement, exp.Delete) and statement.args.get("using"):
        return ["DELETE ... USING: WHERE ... IN (SELECT ...)"]
    return []


def _node(node: exp.Expression) -> list[str]:
    if isinstance(node, exp.Join) and (node.args.get("method") or "").upper() == "ASOF":
        return ["ASOF JOIN: join on spans (warehouse.spans, warehouse.in_span)"]
    if isinstance(node, exp.CTE) and isinstance(node.this, exp.Union) and node.this.args.get("distinct"):
        if any(table.name == node.alias for table in node.this.find_all(exp.Table)):
            return ["recursive UNION: Spark recurses by UNION ALL only; loop over rounds until nothing changes"]
    if isinstance(node, exp.Window) and _function(node.this) in RANKED and not node.args.get("order"):
        return [f"{_function(node.this)}() OVER () without ORDER BY: Spark requires one"]
    if isinstance(node, exp.Qualify) and any(
        c.table and not c.find_ancestor(exp.Window) for c in node.find_all(exp.Column)
    ):
        return ["QUALIFY on a table's column (t.c): Spark's form filters an outer query; name the output column"]
    if isinstance(node, exp.ArrayAgg) and isinstance(node.this, exp.Order):
        return ["list(x ORDER BY y): Spark's collect_list keeps no order; list_sort(list(...)) on a unique key"]
    if isinstance(node, exp.Slice):
        return ["list[a:b]: sqlglot reads ':b' as a parameter; use list_slice(list, a, b)"]
    if isinstance(node, exp.Anonymous) and node.name.lower() not in KNOWN:
        return [f"{node.name.lower()}(): sqlglot does not know it, so Spark may lack it or mean another thing"]
    if isinstance(node, exp.Star) and (node.args.get("replace") or node.args.get("rename")):
        return ["* REPLACE / RENAME: list the columns"]
    if isinstance(node, exp.Union) and node.args.get("by_name"):
        return ["UNION BY NAME: list the columns in order"]
    if isinstance(node, exp.ArgMax | exp.ArgMin) and isinstance(node.expression, exp.Tuple):
        return ["arg_max/arg_min by a tuple: rank with row_number() instead"]
    if _function(node) == "to_json" and isinstance(node.expressions[0], exp.Column) and not node.expressions[0].table:
        return ["to_json(row): warehouse.row_json, the same JSON on both engines"]
    if isinstance(node, exp.Sub) and all(_is_date(side) for side in (node.this, node.expression)):
        return ["date - date: an integer in DuckDB, an interval in Spark; use date_diff('day', a, b)"]
    if isinstance(node, exp.Table) and isinstance(node.this, exp.Func):
        return [f"table function {node.this.sql_name().lower()}(): DuckDB's; read tables, or join a day list table"]
    if isinstance(node, exp.Div) and not _is_double(node.this):
        return ["a / b: a DOUBLE in DuckDB, a DECIMAL in Spark for decimals; CAST(a AS DOUBLE) / b"]
    if (
        isinstance(node, exp.Cast)
        and node.to.is_type(exp.DataType.Type.DECIMAL)
        and isinstance(node.this.unnest(), exp.Div)
    ):
        return ["a DOUBLE quotient cast to DECIMAL rounds differently on Spark: round(q * 100) as BIGINT * 0.01"]
    if _function(node) in FUNCTIONS:
        return [f"{_function(node)}(): {FUNCTIONS[_function(node)]}"]
    return []


def _is_double(node: exp.Expression) -> bool:
    node = node.unnest()
    return isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.DOUBLE)


def _function(node: exp.Expression) -> str:
    """A function's name as written (sqlglot's for those it knows), else ''."""
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    return node.sql_name().lower() if isinstance(node, exp.Func) else ""


def _is_date(node: exp.Expression) -> bool:
    if isinstance(node, exp.Cast):
        return node.to.this in (exp.DataType.Type.DATE,)
    return isinstance(node, exp.Column) and node.name.lower().endswith(TIMES) or isinstance(node, exp.CurrentDate)
