"""User-written journey criteria: parsed with sqlglot, checked against an allow-list, and re-rendered from the
checked tree. Only the re-rendered text reaches SQL; the raw string never does."""

import functools

import duckdb
import sqlglot
from sqlglot import exp

# The profile columns a criterion may read (README, Journeys), as of the end of the day evaluated, with their types.
PROFILE_COLUMNS = {
    "products_purchased": "VARCHAR[]",
    "total_spend": "DECIMAL(18,2)",
    "purchase_count": "BIGINT",
    "days_since_last_purchase": "BIGINT",
    "reward_level": "VARCHAR",
    "points_balance": "BIGINT",
    "tier_expires_in_days": "BIGINT",  # to the tier's next evaluation; NULL for the default tier and lifetime tiers
    "to_next_tier": "DECIMAL(18,2)",  # what the period still needs for the tier above; NULL at the top
}
# Profiles a criterion is tried on at load, so that a type error (`reward_level > 5`, `lower(total_spend)`) is found
# then, naming the journey, not in the middle of a run: a typical one, an empty one (NULLs), and extremes.
_SAMPLE_PROFILES = [
    [["coffee", "tea"], 123.45, 3, 2, "GOLD", 40, 12, 76.56],
    [None, None, None, None, None, None, None, None],
    [[], 0, 0, 0, "", 0, 0, 0],
]

_PREDICATES = (exp.And, exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In, exp.Between, exp.Is)
_LIST_FUNCTIONS = (
    exp.ArrayContains,
    exp.ArrayOverlaps,
    exp.ArrayContainsAll,
)  # list_contains, list_has_any, list_has_all
_VALUE_FUNCTIONS = (exp.Length, exp.Lower, exp.Upper, exp.Coalesce, exp.Abs)
_ALLOWED = (
    *_PREDICATES,
    *_LIST_FUNCTIONS,
    *_VALUE_FUNCTIONS,
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Paren,
    exp.Neg,
    exp.Array,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
)
_KNOWN_BY_NAME = frozenset({"list_has_all"})  # functions sqlglot keeps as anonymous calls
ALLOWED_FUNCTIONS = "list_contains, list_has_any, list_has_all, len, lower, upper, coalesce, abs"


class CriterionError(ValueError):
    pass


@functools.lru_cache(maxsize=256)  # a pure function of the text, called for every criterion on every day
def checked_sql(text: str) -> str:
    """The criterion as DuckDB SQL rebuilt from its checked syntax tree; CriterionError says what is refused."""
    if not isinstance(text, str) or not text.strip():
        raise CriterionError("a criterion must be a non-empty SQL expression")
    if len(text) > 10_000:
        raise CriterionError(f"a criterion is at most 10,000 characters, got {len(text)}")
    try:
        statements = [statement for statement in sqlglot.parse(text, read="duckdb") if statement is not None]
    except sqlglot.errors.ParseError as error:
        raise CriterionError(f"not a valid SQL expression: {text!r} ({error.errors[0]['description']})") from None
    except RecursionError:
        raise CriterionError(f"nested too deeply to read: {text[:60]!r}...") from None
    if len(statements) != 1:
        raise CriterionError(f"one expression only, no ';': {text!r}")
    tree = statements[0]
    for node in tree.walk():
        if isinstance(node, exp.Anonymous) and node.name.lower() in _KNOWN_BY_NAME:
            continue
        if not isinstance(node, _ALLOWED):
            name = node.sql(dialect="duckdb") if not isinstance(node, exp.Query) else "a subquery"
            raise CriterionError(
                f"{type(node).__name__.lower()} not allowed ({name}) in {text!r}; allowed: profile "
                f"columns, literals, comparisons, AND/OR/NOT, IN, BETWEEN, IS NULL, {ALLOWED_FUNCTIONS}"
            )
        if isinstance(node, exp.Column) and (node.table or node.name not in PROFILE_COLUMNS):
            raise CriterionError(
                f"unknown column {node.sql(dialect='duckdb')} in {text!r}; profile columns are {', '.join(sorted(PROFILE_COLUMNS))}"
            )
    inner = tree.unnest() if isinstance(tree, exp.Paren) else tree
    if not isinstance(inner, (*_PREDICATES, *_LIST_FUNCTIONS, exp.Anonymous, exp.Boolean)):
        raise CriterionError(f"a criterion must be true or false, not a value: {text!r}")
    sql = tree.transform(_same_on_every_engine).sql(dialect="duckdb")
    _try_on_sample_profiles(sql, text)
    return sql


def _same_on_every_engine(node: exp.Expression) -> exp.Expression:
    """What the user wrote, in the form that means the same on Spark (portable.py): a list's length is array_length
    (Spark's length() is for text), a quotient of DOUBLEs (Spark divides decimals exactly)."""
    if isinstance(node, exp.Length) and PROFILE_COLUMNS.get(node.this.name, "").endswith("[]"):
        return exp.ArraySize(this=node.this.copy())
    if isinstance(node, exp.Div) and not (isinstance(node.this, exp.Cast) and node.this.to.is_type("double")):
        return exp.Div(this=exp.cast(node.this.copy(), "DOUBLE"), expression=node.expression.copy())
    return node


def _try_on_sample_profiles(sql: str, text: str) -> None:
    """Evaluates the checked criterion on sample profiles of the real column types; any error is the user's."""
    columns = ", ".join(f"{name} {kind}" for name, kind in PROFILE_COLUMNS.items())
    with duckdb.connect() as conn:
        conn.execute(f"CREATE TABLE profile ({columns})")
        conn.executemany(f"INSERT INTO profile VALUES ({', '.join('?' * len(PROFILE_COLUMNS))})", _SAMPLE_PROFILES)
        try:
            conn.execute(f"SELECT count(*) FROM profile WHERE ({sql})::BOOLEAN").fetchall()
        except duckdb.Error as error:
            raise CriterionError(f"{text!r} does not work on a profile: {str(error).splitlines()[0]}") from None
