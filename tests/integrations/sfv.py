"""A small, strict RFC 9651 (structured fields) parser for Lists, for the tests."""

from __future__ import annotations

import base64
import re
from decimal import Decimal
from typing import Any

Params = dict[str, Any]
Member = tuple[Any, Params]

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")


class Token(str):
    """A structured-field Token (as opposed to a String)."""


class SFError(ValueError):
    pass


class _Parser:
    def __init__(self, text: str) -> None:
        if any(ord(c) > 0x7E or (ord(c) < 0x20 and c != "\t") for c in text):
            raise SFError("non-ASCII or control character")
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_sp(self) -> None:
        while self.peek() == " ":
            self.pos += 1

    def skip_ows(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.pos += 1

    def parse_list(self) -> list[Member]:
        self.skip_sp()
        members: list[Member] = []
        while self.pos < len(self.text):
            members.append(self.parse_item_or_inner())
            self.skip_ows()
            if self.pos >= len(self.text):
                return members
            if self.peek() != ",":
                raise SFError(f"expected ',' at {self.pos} in {self.text!r}")
            self.pos += 1
            self.skip_ows()
            if self.pos >= len(self.text):
                raise SFError("trailing comma")
        return members

    def parse_item_or_inner(self) -> Member:
        if self.peek() == "(":
            self.pos += 1
            items = []
            while True:
                self.skip_sp()
                if self.peek() == ")":
                    self.pos += 1
                    return items, self.parse_params()
                items.append((self.parse_bare(), self.parse_params()))
                if self.peek() not in (" ", ")"):
                    raise SFError("bad inner list")
        return self.parse_bare(), self.parse_params()

    def parse_params(self) -> Params:
        params: Params = {}
        while self.peek() == ";":
            self.pos += 1
            self.skip_sp()
            match = _KEY.match(self.text, self.pos)
            if not match:
                raise SFError(f"bad parameter key at {self.pos} in {self.text!r}")
            key = match.group()
            self.pos = match.end()
            value: Any = True
            if self.peek() == "=":
                self.pos += 1
                value = self.parse_bare()
            params[key] = value
        return params

    def parse_bare(self) -> Any:
        char = self.peek()
        if char == "-" or char.isdigit():
            return self.parse_number()
        if char == '"':
            return self.parse_string()
        if char == ":":
            end = self.text.index(":", self.pos + 1)
            raw = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return base64.b64decode(raw, validate=True)
        if char == "?":
            value = self.text[self.pos + 1 : self.pos + 2]
            if value not in ("0", "1"):
                raise SFError("bad boolean")
            self.pos += 2
            return value == "1"
        match = _TOKEN.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            return Token(match.group())
        raise SFError(f"unexpected {char!r} at {self.pos} in {self.text!r}")

    def parse_number(self) -> int | Decimal:
        match = re.compile(r"-?[0-9]+(\.[0-9]+)?").match(self.text, self.pos)
        if not match:
            raise SFError("bad number")
        raw = match.group()
        self.pos = match.end()
        if match.group(1) is None:
            if len(raw.lstrip("-")) > 15:
                raise SFError("integer too long")
            return int(raw)
        integer, fraction = raw.lstrip("-").split(".")
        if len(integer) > 12 or len(fraction) > 3:
            raise SFError("decimal too long")
        return Decimal(raw)

    def parse_string(self) -> str:
        self.pos += 1
        out = []
        while True:
            char = self.peek()
            if not char:
                raise SFError("unterminated string")
            self.pos += 1
            if char == "\\":
                nxt = self.peek()
                if nxt not in ('"', "\\"):
                    raise SFError("bad escape")
                out.append(nxt)
                self.pos += 1
            elif char == '"':
                return "".join(out)
            elif not 0x20 <= ord(char) <= 0x7E:
                raise SFError("bad string character")
            else:
                out.append(char)


def parse_list(text: str) -> list[Member]:
    """Parse an RFC 9651 List; raise SFError on anything invalid."""
    return _Parser(text).parse_list()


def as_dict(text: str) -> dict[str, Params]:
    """A List of String items with parameters, keyed by the item."""
    result: dict[str, Params] = {}
    for item, params in parse_list(text):
        assert isinstance(item, str) and not isinstance(item, Token), item
        assert item not in result, f"duplicate item {item!r}"
        result[item] = params
    return result
