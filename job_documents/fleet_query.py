r"""The fleet-indexing query language, parsed into a tree (pure).

What the AWS IoT developer guide documents (query-syntax.html,
example-thing-queries.html) and this parser accepts:

- terms `field:value`, and a bare `value` (searched in every field);
- wildcards `*` (any run of characters) and `?` (one character) in a value;
  `field:*` matches things that have the field at all;
- quoted phrases `field:"a b"` (wildcards inside quotes are literal);
- ranges `field:[a TO b]` (inclusive), `{a TO b}` (exclusive), mixed brackets,
  `*` as an open bound, and `field:>a`, `>=`, `<`, `<=`;
- `AND`, `OR`, `NOT`, the prefix `-` (exclude), parentheses, juxtaposition
  meaning AND (the default operator), and field grouping `field:(a OR b*)`;
- `\` escapes the next character.

Precedence: NOT/`-` binds tightest, then AND (explicit or implied), then OR.
A query that does not parse raises `QueryError` with what is wrong and where.

Shared by the layers above (stdlib only): the sandbox evaluates queries with it
(`infra.sandbox.indexing`), and the orchestrator checks a campaign's `query:` with the
very same grammar before anything reaches AWS.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_NESTING", "And", "Match", "Node", "Not", "Or", "QueryError", "Range", "parse"]

_MAX_QUERY = 4096
#: Parentheses and NOT/- nest at most this deep: a hostile query cannot exhaust the stack
#: of the parser (nor of the evaluator that walks its tree). AWS documents no such limit.
MAX_NESTING = 32
_SPECIAL = set('()[]{}:"')
_OPERATORS = ("<=", ">=", "<", ">")


class QueryError(ValueError):
    """The query string is not valid fleet-indexing syntax."""


@dataclass(frozen=True, slots=True)
class Match:
    """`field:value` (field None: any field); `quoted` values take wildcards literally."""

    field: str | None
    value: str
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class Range:
    """`field:[low TO high]`; a None bound is open."""

    field: str | None
    low: str | None
    high: str | None
    include_low: bool
    include_high: bool


@dataclass(frozen=True, slots=True)
class Not:
    node: Node


@dataclass(frozen=True, slots=True)
class And:
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    nodes: tuple[Node, ...]


Node = Match | Range | Not | And | Or


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # WORD | PHRASE | ( | ) | [ | ] | { | } | : | OP
    text: str
    at: int


def _tokenize(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(query):
        char = query[i]
        if char.isspace():
            i += 1
        elif char == '"':
            end = i + 1
            text: list[str] = []
            while end < len(query) and query[end] != '"':
                if query[end] == "\\" and end + 1 < len(query):
                    end += 1
                text.append(query[end])
                end += 1
            if end >= len(query):
                raise QueryError(f"unterminated quote at position {i + 1}")
            tokens.append(_Token("PHRASE", "".join(text), i))
            i = end + 1
        elif char in _SPECIAL:
            tokens.append(_Token(char, char, i))
            i += 1
        elif query.startswith(_OPERATORS, i):
            op = next(o for o in _OPERATORS if query.startswith(o, i))
            tokens.append(_Token("OP", op, i))
            i += len(op)
        else:
            start = i
            word: list[str] = []
            while i < len(query) and not query[i].isspace() and query[i] not in _SPECIAL:
                if query[i] == "\\":
                    if i + 1 >= len(query):
                        raise QueryError("a trailing \\ escapes nothing")
                    i += 1
                    word.append("\\" + query[i])
                else:
                    word.append(query[i])
                i += 1
            tokens.append(_Token("WORD", "".join(word), start))
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self, offset: int = 0) -> _Token | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self, kind: str | None = None) -> _Token:
        token = self.peek()
        if token is None:
            raise QueryError("the query ends too early")
        if kind is not None and token.kind != kind:
            raise QueryError(f"expected {kind!r} at position {token.at + 1}, got {token.text!r}")
        self.pos += 1
        return token

    def expression(self, field: str | None) -> Node:
        nodes = [self.conjunction(field)]
        while self._keyword("OR"):
            self.pos += 1
            nodes.append(self.conjunction(field))
        return nodes[0] if len(nodes) == 1 else Or(tuple(nodes))

    def conjunction(self, field: str | None) -> Node:
        nodes = [self.unary(field)]
        while True:
            token = self.peek()
            if token is None or token.kind == ")" or self._keyword("OR"):
                break
            if self._keyword("AND"):
                self.pos += 1
            nodes.append(self.unary(field))
        return nodes[0] if len(nodes) == 1 else And(tuple(nodes))

    def _keyword(self, word: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "WORD" and token.text == word

    def unary(self, field: str | None) -> Node:
        self.depth += 1
        try:
            if self.depth > MAX_NESTING + 1:  # the outermost term is level 0
                token = self.peek()
                where = f" at position {token.at + 1}" if token is not None else ""
                raise QueryError(
                    f"the query nests parentheses or NOT deeper than {MAX_NESTING} levels{where}"
                )
            return self._unary(field)
        finally:
            self.depth -= 1

    def _unary(self, field: str | None) -> Node:
        if self._keyword("NOT"):
            self.pos += 1
            return Not(self.unary(field))
        token = self.peek()
        if token is not None and token.kind == "WORD" and token.text.startswith("-"):
            if token.text == "-":
                self.pos += 1
                return Not(self.unary(field))
            self.tokens[self.pos] = _Token("WORD", token.text[1:], token.at + 1)
            return Not(self.unary(field))
        return self.primary(field)

    def primary(self, field: str | None) -> Node:
        token = self.take()
        if token.kind == "(":
            node = self.expression(field)
            self.take(")")
            return node
        if token.kind == "WORD" and (after := self.peek()) is not None and after.kind == ":":
            if field is not None:
                raise QueryError(f"field {token.text!r} inside a field group at {token.at + 1}")
            self.pos += 1
            return self.value(_unescape(token.text))
        return self.value_token(token, field)

    def value(self, field: str) -> Node:
        token = self.take()
        if token.kind == "(":
            node = self.expression(field)
            self.take(")")
            return node
        return self.value_token(token, field)

    def value_token(self, token: _Token, field: str | None) -> Node:
        if token.kind in ("[", "{"):
            return self.range(token, field)
        if token.kind == "OP":
            bound = self._bound(self.take())
            if token.text.startswith(">"):
                return Range(field, bound, None, include_low=token.text == ">=", include_high=False)
            return Range(field, None, bound, include_low=False, include_high=token.text == "<=")
        if token.kind == "PHRASE":
            return Match(field, token.text, quoted=True)
        if token.kind == "WORD":
            if token.text in ("AND", "OR", "NOT"):
                raise QueryError(f"{token.text} at position {token.at + 1} has nothing before it")
            return Match(field, token.text)
        raise QueryError(f"unexpected {token.text!r} at position {token.at + 1}")

    def range(self, opening: _Token, field: str | None) -> Range:
        low = self._bound(self.take())
        to = self.take("WORD")
        if to.text != "TO":
            raise QueryError(f"a range needs TO at position {to.at + 1}, got {to.text!r}")
        high = self._bound(self.take())
        closing = self.take()
        if closing.kind not in ("]", "}"):
            raise QueryError(f"a range ends with ] or }} at position {closing.at + 1}")
        return Range(
            field, low, high, include_low=opening.kind == "[", include_high=closing.kind == "]"
        )

    @staticmethod
    def _bound(token: _Token) -> str | None:
        if token.kind == "PHRASE":
            return token.text
        if token.kind != "WORD":
            raise QueryError(f"expected a value at position {token.at + 1}, got {token.text!r}")
        return None if token.text == "*" else _unescape(token.text)


def _unescape(text: str) -> str:
    out: list[str] = []
    escaped = False
    for char in text:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def parse(query: str) -> Node:
    """The query's tree; `QueryError` says what is wrong."""
    if not query.strip():
        raise QueryError("the query string is empty")
    if len(query) > _MAX_QUERY:
        raise QueryError(f"the query string is longer than {_MAX_QUERY} characters")
    parser = _Parser(_tokenize(query))
    node = parser.expression(None)
    extra = parser.peek()
    if extra is not None:
        raise QueryError(f"unexpected {extra.text!r} at position {extra.at + 1}")
    return node
