"""What an analyst's SQL may contain, checked on ClickHouse's own parse tree.

``readonly=1`` stops writes, but not reads that leave the data: the scalar ``file()`` reads any
file the engine's process can read (the pseudonymisation key, Kafka segments, ``/proc``), and
the embedded chDB runs as ``clickhouse-local``, where ``user_files_path`` is not enforced. So the
gateway parses every query with the engine's parser (``parseQueryToJSON``: the same grammar that
will run it, so nothing hides in comments, quoting or case) and walks the tree against three
allowlists; anything not on them is refused before the query runs:

- **node kinds**: a ``SELECT`` (with ``UNION``/``EXCEPT``/``INTERSECT``, ``WITH``, joins,
  subqueries, windows). No ``SETTINGS``, ``FORMAT``, ``INTO OUTFILE``, no other statement.
- **tables**: only the role's tables in the data (or audit) database; ``WITH`` names the query
  defines; a role's parameterised views. No ``system.*``, ``INFORMATION_SCHEMA``, no other
  database; no table named through a parameter (``{t:Identifier}``).
- **functions**: the engine's own catalogue (``system.functions``) by category — arithmetic,
  strings, dates, arrays, aggregates, JSON... — plus a reviewed handful from "Other". Refused:
  files (``file``), settings and server introspection (``getSetting``, ``getServerSetting``,
  ``hostName``…), dictionaries, ``joinGet``, models, AI (network), encryption, ``sleep``; and
  every table function except number generators and ``VALUES``.

A function the catalogue does not know is refused: a new engine version adds functions to
nothing but the categories it names, and anything uncategorised stays out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from streams.errors import YurongError

ALLOWED_CATEGORIES = frozenset({
    "Aggregate Functions", "Arithmetic", "Arrays", "Bit", "Bitmap", "Comparison", "Conditional", "Dates and Times",
    "Distance", "Encoding", "Financial", "Geo", "Geo Polygon", "Hash", "IP Address", "JSON", "Logical", "Map",
    "Mathematical", "Null", "Random Number", "Rounding", "String", "String Replacement", "String Search",
    "String Splitting", "Time Window", "Tuple", "Type Conversion", "URL", "UUID",
})
# "Other" holds pure formatting helpers beside server introspection; these were read one by one
OTHER_ALLOWED = frozenset({
    "bar", "formatReadableDecimalSize", "formatReadableQuantity", "formatReadableSize", "formatReadableTimeDelta",
    "parseReadableSize", "parseReadableSizeOrNull", "parseReadableSizeOrZero", "parseTimeDelta", "transform",
    "toTypeName", "toColumnTypeName", "materialize", "identity", "isConstant", "finalizeAggregation", "neighbor",
    "runningDifference", "runningDifferenceStartingWithFirstValue", "runningAccumulate", "countDigits", "byteSize",
    "visibleWidth", "isDecimalOverflow", "MACNumToString", "MACStringToNum", "MACStringToOUI", "throwIf",
})
# inside those categories, still refused: they reach outside the data or the session
DENIED = frozenset({
    "file", "currentRequestURL", "getClientHTTPHeader", "serverTimezone", "serverTimeZone", "getServerSetting",
    "getSetting", "getSettingOrDefault", "getMergeTreeSetting", "reverseDNSQuery", "hostName", "hostname",
    "fullHostName", "FQDN", "filesystemAvailable", "filesystemCapacity", "filesystemUnreserved",
})
# functions of the grammar that system.functions does not list
GRAMMAR = frozenset({"lambda", "exists", "untuple", "tuple", "in", "notIn", "globalIn", "globalNotIn"})
TABLE_FUNCTIONS = frozenset({"numbers", "generateSeries", "generate_series", "values"})
AGGREGATE_COMBINATORS = ("If", "Array", "Map", "State", "Merge", "MergeState", "ForEach", "Distinct", "OrDefault",
                         "OrNull", "Resample", "SimpleState", "ArgMin", "ArgMax")
IN_FUNCTIONS = frozenset({"in", "notIn", "globalIn", "globalNotIn", "nullIn", "notNullIn", "globalNullIn",
                          "globalNotNullIn"})

NODE_KINDS = frozenset({
    "SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery", "ExpressionList", "WithElement", "Subquery",
    "Literal", "Identifier", "Function", "Asterisk", "QualifiedAsterisk", "ColumnsRegexpMatcher",
    "ColumnsListMatcher", "QualifiedColumnsRegexpMatcher", "QualifiedColumnsListMatcher", "ColumnsTransformerList",
    "ColumnsExceptTransformer", "ColumnsReplaceTransformer", "TablesInSelectQuery", "TablesInSelectQueryElement",
    "TableExpression", "TableIdentifier", "TableJoin", "ArrayJoin", "OrderByElement", "WindowDefinition",
    "WindowListElement", "QueryParameter", "SampleRatio", "InterpolateElement",
})
FORBIDDEN_KEYS = {"out_file": "INTO OUTFILE", "format_ast": "FORMAT", "settings": "SETTINGS",
                  "settings_ast": "SETTINGS", "compression": "COMPRESSION"}


class QueryRefused(YurongError):
    """The query names something outside its role's data; it was not run."""


@dataclass(frozen=True)
class FunctionCatalogue:
    """The engine's functions an analyst may call."""

    exact: frozenset[str]
    case_insensitive: frozenset[str]  # lower-cased
    aggregates: frozenset[str]
    aggregates_ci: frozenset[str]  # lower-cased

    @classmethod
    def from_engine(cls, rows: Iterable[tuple[str, Any, str, str, Any]]) -> FunctionCatalogue:
        """``rows``: ``(name, case_insensitive, alias_to, categories, is_aggregate)`` of ``system.functions``."""
        rows = list(rows)
        category = {name: {c.strip() for c in cats.split(",") if c.strip()} for name, _, _, cats, _ in rows}

        def allowed(name: str, alias_to: str) -> bool:
            if name in DENIED or alias_to in DENIED:
                return False
            cats = category.get(name) or category.get(alias_to) or set()
            if "Other" in cats:
                return name in OTHER_ALLOWED or alias_to in OTHER_ALLOWED
            return bool(cats) and cats <= ALLOWED_CATEGORIES

        ok = [(n, bool(ci), bool(agg)) for n, ci, alias, _, agg in rows if allowed(n, alias)]
        return cls(exact=frozenset(n for n, _, _ in ok) | GRAMMAR,
                   case_insensitive=frozenset(n.lower() for n, ci, _ in ok if ci),
                   aggregates=frozenset(n for n, _, agg in ok if agg),
                   aggregates_ci=frozenset(n.lower() for n, ci, agg in ok if agg and ci))

    def allows(self, name: str) -> bool:
        if name in self.exact or name.lower() in self.case_insensitive:
            return True
        base = name  # an aggregate with combinators: sumIf, uniqArrayIf, avgStateIf...
        while True:
            for suffix in AGGREGATE_COMBINATORS:
                if base.endswith(suffix) and len(base) > len(suffix):
                    base = base[: -len(suffix)]
                    break
            else:
                return False
            if base in self.aggregates or base.lower() in self.aggregates_ci:
                return True


@dataclass(frozen=True)
class Scope:
    """What one query may name: its role's tables, resolved against the session's database."""

    tables: frozenset[tuple[str, str]]
    database: str

    def resolve(self, name: str) -> tuple[str, str]:
        db, _, table = name.rpartition(".")
        return (db or self.database, table)


def check(tree: dict, scope: Scope, functions: FunctionCatalogue) -> None:
    """Raise ``QueryRefused`` unless the parsed query ``tree`` stays inside ``scope``."""
    if tree.get("type") not in ("SelectWithUnionQuery", "SelectIntersectExceptQuery"):
        raise QueryRefused(f"only SELECT queries are allowed (this is {_kind(tree)})")
    for node, ctes in _nodes(tree):
        kind = node.get("type")
        if kind not in NODE_KINDS:
            raise QueryRefused(f"{_kind(node)} is not allowed in an analyst query")
        for key, clause in FORBIDDEN_KEYS.items():
            if node.get(key):
                raise QueryRefused(f"{clause} is not allowed in an analyst query (limits and output are the gateway's)")
        if node.get("is_into_outfile_with_stdout"):
            raise QueryRefused("INTO OUTFILE is not allowed in an analyst query")
        if kind == "QueryParameter" and str(node.get("param_type", "")).lower() == "identifier":
            raise QueryRefused(f"parameter {{{node.get('name')}:Identifier}}: names of tables or columns cannot be "
                               "parameters, only values")
        if kind == "TableIdentifier":
            _check_table(str(node.get("name", "")), scope, ctes)
        elif kind == "TableExpression" and isinstance(node.get("table_function"), dict):
            fn = node["table_function"]
            name = str(fn.get("name", ""))
            if name not in TABLE_FUNCTIONS and scope.resolve(name) not in scope.tables:
                raise QueryRefused(f"table function {name}() is not allowed: analysts read their tables only")
            fn["_table_function"] = True  # checked here; not as a scalar function below
        elif kind == "Function":
            name = str(node.get("name", ""))
            if not node.get("_table_function") and not functions.allows(name):
                raise QueryRefused(f"function {name}() is not allowed in an analyst query")
            if name in IN_FUNCTIONS:  # `x IN db.table` names a table
                args = (node.get("arguments") or {}).get("children") or []
                if len(args) == 2 and args[1].get("type") == "Identifier":
                    _check_table(str(args[1].get("name", "")), scope, ctes)


def _check_table(name: str, scope: Scope, ctes: frozenset[str]) -> None:
    if not name:
        raise QueryRefused("a table must be named in the query, not through a parameter")
    if "." not in name and name in ctes:
        return
    if scope.resolve(name) not in scope.tables:
        raise QueryRefused(f"table {name} is not readable by this role")


def _nodes(tree: Any) -> Iterator[tuple[dict, frozenset[str]]]:
    """Every node of the tree with the ``WITH`` names visible at it, depth first (iterative: a deep
    query cannot exhaust the stack). A ``WITH`` name is visible in its own SELECT and the queries
    nested in it, not outside: a CTE named like a table cannot hide that table elsewhere."""
    stack: list[tuple[Any, frozenset[str]]] = [(tree, frozenset())]
    while stack:
        item, ctes = stack.pop()
        if isinstance(item, dict):
            if item.get("type") == "SelectQuery" and isinstance(item.get("with"), dict):
                ctes = ctes | {str(w["name"]) for w in item["with"].get("children") or []
                               if isinstance(w, dict) and w.get("type") == "WithElement" and w.get("name")}
            if "type" in item:
                yield item, ctes
            if not _is_literal(item):
                stack.extend((v, ctes) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, ctes) for v in item)


def _is_literal(node: dict) -> bool:
    return node.get("type") == "Literal"


def _kind(node: dict) -> str:
    return str(node.get("type", "an unknown statement"))
