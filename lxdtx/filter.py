# -*- test-case-name: tests.unit.test_filter -*-
"""The `filter=` language of list endpoints (`api_filtering`).

`lxc list key=value` sends `key eq value [and key eq value ...]`. Expressions
combine `eq`/`ne` comparisons with `and`, `or`, `not` and parentheses. Keys are
dotted paths into the JSON object (`status`, `config.image.os`, `expanded_config.…`);
values match case-insensitively as anchored regular expressions, as LXD does.
"""

import re
import shlex

from lxdtx import errors


def _tokens(text):
    lexer = shlex.shlex(text.replace("(", " ( ").replace(")", " ) "), posix=True)
    lexer.whitespace_split = True
    lexer.quotes = "\"'"
    return list(lexer)


def _lookup(obj, key):
    """A field by dotted key; map keys containing dots (config keys) are tried whole first."""
    if not key:
        return obj
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        head, _, rest = key.partition(".")
        if head in obj:
            return _lookup(obj[head], rest)
        for candidate in sorted(obj, key=len, reverse=True):
            if key.startswith(candidate + "."):
                return _lookup(obj[candidate], key[len(candidate) + 1:])
    return None


def _match(actual, pattern):
    if actual is None:
        return False
    if isinstance(actual, bool):
        actual = "true" if actual else "false"
    try:
        return re.fullmatch(pattern, str(actual), re.IGNORECASE) is not None
    except re.error:
        return str(actual).lower() == pattern.lower()


def _either(left, right):
    return lambda obj: left(obj) or right(obj)


def _both(left, right):
    return lambda obj: left(obj) and right(obj)


class _Parser:
    def __init__(self, tokens):
        self.tokens = tokens
        self.pos = 0

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self):
        token = self.peek()
        if token is None:
            raise errors.BadRequest("Invalid filter: unexpected end")
        self.pos += 1
        return token

    def expression(self):
        node = self.conjunction()
        while self.peek() and self.peek().lower() == "or":
            self.take()
            node = _either(node, self.conjunction())
        return node

    def conjunction(self):
        node = self.unary()
        while self.peek() and self.peek().lower() == "and":
            self.take()
            node = _both(node, self.unary())
        return node

    def unary(self):
        if self.peek() and self.peek().lower() == "not":
            self.take()
            inner = self.unary()
            return lambda obj: not inner(obj)
        if self.peek() == "(":
            self.take()
            node = self.expression()
            if self.take() != ")":
                raise errors.BadRequest("Invalid filter: missing )")
            return node
        key = self.take()
        op = self.take().lower()
        value = self.take()
        if op == "eq":
            return lambda obj: _match(_lookup(obj, key), value)
        if op == "ne":
            return lambda obj: not _match(_lookup(obj, key), value)
        raise errors.BadRequest(f"Invalid filter operator: {op}")


def compile_filter(text):
    """A predicate over JSON objects, or None for an empty filter."""
    if not text or not text.strip():
        return None
    try:
        tokens = _tokens(text)
    except ValueError as e:
        raise errors.BadRequest(f"Invalid filter: {e}")
    parser = _Parser(tokens)
    predicate = parser.expression()
    if parser.peek() is not None:
        raise errors.BadRequest(f"Invalid filter: unexpected {parser.peek()}")
    return predicate
