"""SCIM filters (RFC 7644 section 3.4.2.2): a tokenizer, a recursive-descent
parser producing an AST, and a compiler from the AST to parameterised SQL.

Contract: `parse(text)` returns an AST or raises FilterError (the web layer
answers 400 scimType invalidFilter); `compile_filter(ast, schema)` returns a
psycopg.sql.Composed and its parameters, or raises FilterError for an
attribute or operator the schema does not support. User values only ever
travel as parameters: the SQL text is built from the schema's fixed column
expressions and fixed operator strings.

Grammar (precedence: not > and > or):

    filter   := or
    or       := and ("or" and)*
    and      := unary ("and" unary)*
    unary    := "not" "(" filter ")" | "(" filter ")" | attrexp
    attrexp  := path "pr" | path op value
              | path "[" filter "]" ("." sub (op value | "pr"))?
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re

from psycopg import sql

MAX_LENGTH = 4096
MAX_DEPTH = 32
OPS = {"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"}


class FilterError(ValueError):
    """The filter is malformed or asks for something unsupported."""


# -- AST ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Compare:
    path: str  # lowercased, URN stripped: "username", "name.givenname", "emails.value"
    op: str  # one of OPS, or "pr"
    value: object = None


@dataclasses.dataclass(frozen=True)
class Logical:
    op: str  # "and" | "or"
    left: object
    right: object


@dataclasses.dataclass(frozen=True)
class Not:
    inner: object


@dataclasses.dataclass(frozen=True)
class ValuePath:
    path: str  # the multi-valued attribute: "emails", "members"
    inner: object  # a filter over its sub-attributes
    then: Compare | None = None  # emails[type eq "work"].value co "x"


# -- tokenizer ---------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<punct>[()\[\]])
    | (?P<string>"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")
    | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![A-Za-z0-9:._$-]))
    | (?P<word>[A-Za-z0-9:._$-]+)
    )""",
    re.VERBOSE,
)


@dataclasses.dataclass
class _Tok:
    kind: str
    text: str
    value: object = None


def tokenize(text: str) -> list[_Tok]:
    if not isinstance(text, str) or not text.strip():
        raise FilterError("the filter is empty")
    if len(text) > MAX_LENGTH:
        raise FilterError("the filter is too long")
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"unexpected character at {pos}")
        pos = m.end()
        if m.group("punct"):
            out.append(_Tok("punct", m.group("punct")))
        elif m.group("string") is not None:
            out.append(_Tok("value", m.group("string"), json.loads(m.group("string"))))
        elif m.group("number") is not None:
            out.append(_Tok("value", m.group("number"), json.loads(m.group("number"))))
        else:
            word = m.group("word")
            low = word.lower()
            if low in ("true", "false", "null"):
                out.append(
                    _Tok(
                        "value", word, {"true": True, "false": False, "null": None}[low]
                    )
                )
            else:
                out.append(_Tok("word", word))
    return out


def normalise_path(word: str) -> str:
    """An attribute path without its schema URN, lowercased.

    `urn:ietf:params:scim:schemas:core:2.0:User:userName` -> `username`;
    `urn:...:enterprise:2.0:User:manager.value` -> `manager.value`.
    """
    low = word.lower()
    if low.startswith("urn:"):
        # The attribute follows the URN's last colon.
        low = low.rsplit(":", 1)[1]
        if not low:
            raise FilterError("an attribute is missing after its schema")
    if not re.fullmatch(r"[a-z$][a-z0-9_$-]*(\.[a-z$][a-z0-9_$-]*)?", low):
        raise FilterError(f"not an attribute: {word[:60]}")
    return low


# -- parser ------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[_Tok]):
        self.toks = tokens
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise FilterError("the filter ends too early")
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok.kind != "punct" or tok.text != text:
            raise FilterError(f"expected {text!r}")

    def word_is(self, *words: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "word" and tok.text.lower() in words

    def filter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError("the filter nests too deeply")
        node = self.or_()
        self.depth -= 1
        return node

    def or_(self):
        node = self.and_()
        while self.word_is("or"):
            self.take()
            node = Logical("or", node, self.and_())
        return node

    def and_(self):
        node = self.unary()
        while self.word_is("and"):
            self.take()
            node = Logical("and", node, self.unary())
        return node

    def unary(self):
        tok = self.peek()
        if tok is None:
            raise FilterError("the filter ends too early")
        if tok.kind == "word" and tok.text.lower() == "not":
            self.take()
            self.expect("(")
            inner = self.filter()
            self.expect(")")
            return Not(inner)
        if tok.kind == "punct" and tok.text == "(":
            self.take()
            inner = self.filter()
            self.expect(")")
            return inner
        return self.attrexp()

    def compare(self, path: str) -> Compare:
        tok = self.take()
        if tok.kind != "word":
            raise FilterError("expected an operator")
        op = tok.text.lower()
        if op == "pr":
            return Compare(path, "pr")
        if op not in OPS:
            raise FilterError(f"unknown operator {tok.text[:20]}")
        value = self.take()
        if value.kind != "value":
            raise FilterError("expected a value")
        return Compare(path, op, value.value)

    def attrexp(self):
        tok = self.take()
        if tok.kind != "word":
            raise FilterError("expected an attribute")
        path = normalise_path(tok.text)
        nxt = self.peek()
        if nxt is not None and nxt.kind == "punct" and nxt.text == "[":
            if "." in path:
                raise FilterError("a value filter applies to a multi-valued attribute")
            self.take()
            inner = self.filter()
            self.expect("]")
            then = None
            after = self.peek()
            if (
                after is not None
                and after.kind == "word"
                and after.text.startswith(".")
            ):
                self.take()
                sub = normalise_path(after.text[1:])
                then = self.compare(f"{path}.{sub}")
            return ValuePath(path, inner, then)
        return self.compare(path)


def parse(text: str):
    """The AST of a filter, or FilterError."""
    parser = _Parser(tokenize(text))
    node = parser.filter()
    if parser.peek() is not None:
        raise FilterError("unexpected text after the filter")
    return node


# -- compiler ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Attr:
    """A filterable attribute: its SQL expression and type.

    `expr` is fixed SQL text naming columns of the resource query; `kind` is
    'string' (case-insensitive), 'folded' (case-insensitive, over a column
    that already holds lower(value): the condition `col = lower($1)` is
    leakproof, so under RLS it can be an index condition where
    `lower(col) = lower($1)` cannot), 'exact' (case-sensitive string),
    'bool', 'datetime' or 'uuid'. `multi` names a multi-valued attribute whose rows
    come from `multi_from` (an SQL set of elements called `e`).
    """

    expr: str
    kind: str = "string"


@dataclasses.dataclass(frozen=True)
class Multi:
    """A multi-valued attribute: `source` yields one row per value (alias e)."""

    source: str
    subs: dict  # sub-attribute name -> Attr over e
    default: str = "value"


@dataclasses.dataclass(frozen=True)
class Schema:
    attrs: dict  # path -> Attr
    multis: dict  # name -> Multi


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _datetime(value) -> dt.datetime:
    if not isinstance(value, str):
        raise FilterError("a date is compared with a string")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError("not a date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


_SQL_OPS = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}


class _Compiler:
    def __init__(self, schema: Schema):
        self.schema = schema
        self.params: list = []

    def param(self, value) -> sql.Composable:
        self.params.append(value)
        return sql.Placeholder()

    def node(self, node, scope: Multi | None = None) -> sql.Composable:
        if isinstance(node, Logical):
            joiner = sql.SQL(" and " if node.op == "and" else " or ")
            return sql.SQL("({})").format(
                joiner.join([self.node(node.left, scope), self.node(node.right, scope)])
            )
        if isinstance(node, Not):
            return sql.SQL("(not coalesce({}, false))").format(
                self.node(node.inner, scope)
            )
        if isinstance(node, ValuePath):
            if scope is not None:
                raise FilterError("value filters do not nest")
            multi = self.schema.multis.get(node.path)
            if multi is None:
                raise FilterError(f"{node.path} is not a multi-valued attribute")
            cond = self.node(node.inner, multi)
            if node.then is not None:
                sub = node.then.path.split(".", 1)[1]
                cond = sql.SQL("({} and {})").format(
                    cond, self.compare(node.then, self.sub_attr(multi, sub))
                )
            return sql.SQL("exists (select from " + multi.source + " where {})").format(
                cond
            )
        if isinstance(node, Compare):
            return self.compare_node(node, scope)
        raise FilterError("unsupported filter")

    def sub_attr(self, multi: Multi, name: str) -> Attr:
        attr = multi.subs.get(name)
        if attr is None:
            raise FilterError(f"unknown sub-attribute {name}")
        return attr

    def compare_node(self, node: Compare, scope: Multi | None) -> sql.Composable:
        if scope is not None:
            return self.compare(node, self.sub_attr(scope, node.path))
        attr = self.schema.attrs.get(node.path)
        if attr is not None:
            return self.compare(node, attr)
        head, _, sub = node.path.partition(".")
        multi = self.schema.multis.get(head)
        if multi is None:
            raise FilterError(f"unknown attribute {node.path}")
        inner = self.compare(node, self.sub_attr(multi, sub or multi.default))
        return sql.SQL("exists (select from " + multi.source + " where {})").format(
            inner
        )

    def compare(self, node: Compare, attr: Attr) -> sql.Composable:
        col = sql.SQL(attr.expr)
        op, value = node.op, node.value
        if op == "pr":
            if attr.kind in ("string", "exact"):
                return sql.SQL("({} is not null and {} <> '')").format(col, col)
            return sql.SQL("({} is not null)").format(col)
        if value is None:
            if op == "eq":
                return sql.SQL("({} is null)").format(col)
            if op == "ne":
                return sql.SQL("({} is not null)").format(col)
            raise FilterError("null is compared with eq or ne only")
        if attr.kind == "bool":
            if not isinstance(value, bool) or op not in ("eq", "ne"):
                raise FilterError(
                    "a boolean is compared with eq or ne and true or false"
                )
            return sql.SQL("({} " + _SQL_OPS[op] + " {})").format(
                col, self.param(value)
            )
        if attr.kind == "datetime":
            if op not in _SQL_OPS:
                raise FilterError("dates are compared with eq, ne, gt, ge, lt or le")
            return sql.SQL("({} " + _SQL_OPS[op] + " {})").format(
                col, self.param(_datetime(value))
            )
        if attr.kind == "uuid":
            if not isinstance(value, str) or op not in ("eq", "ne"):
                raise FilterError("an id is compared with eq or ne and a string")
            return sql.SQL("({}::text " + _SQL_OPS[op] + " lower({}))").format(
                col, self.param(value)
            )
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise FilterError("a string attribute is compared with a string")
        text = str(value)
        if attr.kind == "string":
            left, right = sql.SQL("lower({})").format(col), sql.SQL("lower({})")
        elif attr.kind == "folded":
            left, right = col, sql.SQL("lower({})")
        else:
            left, right = col, sql.SQL("{}")
        if op in _SQL_OPS:
            return sql.SQL("({} " + _SQL_OPS[op] + " {})").format(
                left, right.format(self.param(text))
            )
        pattern = {"co": "%{}%", "sw": "{}%", "ew": "%{}"}[op].format(
            _like_escape(text)
        )
        return sql.SQL("({} like {} escape '\\')").format(
            left, right.format(self.param(pattern))
        )


def compile_filter(ast, schema: Schema) -> tuple[sql.Composable, list]:
    """SQL for the AST over `schema`, with its parameters (positional)."""
    compiler = _Compiler(schema)
    return compiler.node(ast), compiler.params
