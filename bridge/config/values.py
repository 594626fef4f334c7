"""The typed-scalar machinery the section parsers are written with.

`Context` resolves ``${NAME}``, ``${NAME:-default}`` and ``${file:/path}`` references and reads typed
values (integers, numbers, booleans, choices, lists) with the profile's error messages; `Section` is
one mapping of the profile, whose unknown keys are rejected (with a did-you-mean) as soon as it is
opened; `MISSING` marks an absent key. `quote`, `show` and `kind` are how a value appears in a
message (`kind` for one that must not be shown). `clean_text` is the one check of a text that must
not be empty nor hold control characters (or another set of unsafe ones), with each key's message.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, NamedTuple, cast

from bridge.errors import ConfigError

_DERIVED_HINTS: Final = {
    "sample_rate": "sample_rate is not a key: it is read from the bot.url query, e.g. ?sample-rate=16000",
    "sample-rate": "sample-rate is not a key: it is read from the bot.url query, e.g. ?sample-rate=16000",
    "query_parameters": "query_parameters is not a key: it is read from the bot.url query string",
}

_VAR_RE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_INT_TEXT_RE: Final = re.compile(r"[+-]?[0-9]+")
CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
SPACE_OR_CONTROL_RE: Final = re.compile(r"[\s\x00-\x1f\x7f]")

_SHOW_MAX: Final = 80


# --------------------------------------------------------------------------- helpers: messages


def quote(text: str) -> str:
    if len(text) > _SHOW_MAX:
        text = text[: _SHOW_MAX - 3] + "..."
    return json.dumps(text, ensure_ascii=False)


def kind(value: object) -> str:
    """A value's type, for messages that must not show the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


def show(value: object) -> str:
    """A non-secret value as it should appear after "got" in a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    return kind(value)


def _unknown_key(key: str, name: str, allowed: Sequence[str]) -> ConfigError:
    if name in _DERIVED_HINTS:
        return ConfigError(key, f"unknown key: {_DERIVED_HINTS[name]}")
    lowered = {a.lower(): a for a in allowed}
    match = lowered.get(name.lower().replace("-", "_"))
    if match is None:
        close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
        if not close:
            close = difflib.get_close_matches(name.lower(), list(allowed), n=1, cutoff=0.6)
        match = close[0] if close else None
    hint = f'did you mean "{match}"? ' if match else ""
    return ConfigError(key, f"unknown key; {hint}expected one of: {', '.join(allowed)}")


# --------------------------------------------------------------------------- helpers: values


class Text(NamedTuple):
    value: str  # after ${...} substitution
    shown: str  # how to show it in a message: the text as written if a substitution happened


MISSING: Final = object()


def clean_text(
    key: str,
    value: str,
    message: str,
    *,
    unsafe: re.Pattern[str] = CONTROL_RE,
    strip: bool = True,
    empty: str | None = None,
    blank_is_empty: bool = True,
) -> str:
    """`value` (stripped unless `strip` is false) when it is not empty and holds no character
    `unsafe` matches; else ConfigError(key, message), or (key, empty) for an empty one if given.

    White space alone counts as empty unless `blank_is_empty` is false (a password of spaces is
    one, a value that is used unstripped may keep its spaces)."""
    text = value.strip() if strip else value
    if not (value.strip() if blank_is_empty else value):
        raise ConfigError(key, message if empty is None else empty)
    if unsafe.search(text):
        raise ConfigError(key, message)
    return text


class Context:
    def __init__(self, env: Mapping[str, str] | None, base_dir: Path | None) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.base_dir = base_dir
        self.warnings: list[str] = []

    # ----------------------------------------------------------- substitution

    def substitute(self, key: str, raw: str, *, secret: bool) -> tuple[str, bool]:
        """Resolve ``${...}`` references in ``raw``. Returns the text and whether anything was replaced."""
        if "${" not in raw:
            return raw, False
        out: list[str] = []
        pos = 0
        replaced = False
        while True:
            start = raw.find("${", pos)
            if start < 0:
                out.append(raw[pos:])
                break
            if start > 0 and raw[start - 1] == "$":  # "$${" is a literal "${"
                out.append(raw[pos : start - 1] + "${")
                pos = start + 2
                continue
            out.append(raw[pos:start])
            end = raw.find("}", start + 2)
            if end < 0:
                raise ConfigError(
                    key,
                    "unterminated ${ reference; expected ${NAME}, ${NAME:-default} or ${file:/path} "
                    "(write $${ for a literal ${)",
                )
            body = raw[start + 2 : end]
            replaced = True
            if body.startswith("file:"):
                if start != 0 or end != len(raw) - 1:
                    raise ConfigError(key, "a ${file:/path} reference must be the whole value")
                return self._read_file(key, body[5:]), True
            match = _VAR_RE.fullmatch(body)
            if match is None:
                what = "reference" if secret else f"reference {quote('${' + body + '}')}"
                raise ConfigError(
                    key,
                    f"invalid {what}; expected ${{NAME}}, ${{NAME:-default}} or ${{file:/path}} "
                    "(write $${ for a literal ${)",
                )
            var, default = match.group(1), match.group(2)
            value = self.env.get(var)
            if value is None or (default is not None and value == ""):
                if default is None:
                    raise ConfigError(
                        key,
                        f"environment variable {var} is not set (referenced as ${{{var}}}); "
                        f"set it, or give a default with ${{{var}:-default}}",
                    )
                value = default
            out.append(value)
            pos = end + 1
        return "".join(out), replaced

    def _read_file(self, key: str, name: str) -> str:
        if not name.strip():
            raise ConfigError(key, "${file:} names no file; expected ${file:/path/to/file}")
        path = Path(name)
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        try:
            data = path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(key, f"cannot read secret file {path}: {reason}") from None
        except ValueError:  # an embedded NUL or an unencodable character in the path
            raise ConfigError(key, f"cannot read secret file {quote(name)}: invalid path") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(key, f"secret file {path} is not valid UTF-8 text") from None
        if text.endswith("\n"):
            text = text[:-1]
            if text.endswith("\r"):
                text = text[:-1]
        return text

    # ----------------------------------------------------------- typed readers

    def text(self, key: str, value: object, expected: str, *, secret: bool = False) -> Text:
        if not isinstance(value, str):
            got = kind(value) if secret else show(value)
            raise ConfigError(key, f"expected {expected}, got {got}")
        resolved, replaced = self.substitute(key, value, secret=secret)
        return Text(resolved, quote(value) if replaced else quote(resolved))

    def scalar_text(self, key: str, value: object) -> str | None:
        """The text of a number/boolean written as a ``${...}`` string, else None."""
        if isinstance(value, str) and "${" in value:
            resolved, replaced = self.substitute(key, value, secret=False)
            if replaced:
                return resolved.strip()
        return None

    def integer(
        self, key: str, value: object, lo: int, hi: int, *, step: int = 1, what: str | None = None
    ) -> int:
        expected = what or f"an integer {lo}-{hi}"
        number: int | None = None
        shown = show(value)
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = self.scalar_text(key, value)
            if text is not None:
                shown = quote(cast(str, value))
                if _INT_TEXT_RE.fullmatch(text) and len(text) < 30:
                    number = int(text)
        if number is None or not lo <= number <= hi or number % step:
            raise ConfigError(key, f"expected {expected}, got {shown}")
        return number

    def number(self, key: str, value: object, lo: float, hi: float) -> float:
        expected = f"a number {lo:g}-{hi:g}"
        shown = show(value)
        number: float | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = float(value) if lo <= value <= hi else None
        elif isinstance(value, float):
            number = value
        else:
            text = self.scalar_text(key, value)
            if text is not None:
                shown = quote(cast(str, value))
                try:
                    number = float(text) if len(text) < 40 else None
                except ValueError:
                    number = None
        if number is None or math.isnan(number) or not lo <= number <= hi:
            raise ConfigError(key, f"expected {expected}, got {shown}")
        return number

    def boolean(self, key: str, value: object) -> bool:
        if isinstance(value, bool):
            return value
        text = self.scalar_text(key, value)
        if text is not None:
            lowered = text.lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
            raise ConfigError(key, f"expected true or false, got {quote(cast(str, value))}")
        raise ConfigError(key, f"expected true or false, got {show(value)}")

    def choice(self, key: str, value: object, choices: Sequence[str]) -> str:
        expected = "one of " + ", ".join(choices)
        text = self.text(key, value, expected)
        for option in choices:
            if text.value.strip().lower() == option.lower():
                return option
        raise ConfigError(key, f"expected {expected}, got {text.shown}")

    def int_choice(self, key: str, value: object, choices: Sequence[int]) -> int:
        expected = " or ".join(str(c) for c in choices)
        number = self.integer(key, value, min(choices), max(choices), what=expected)
        if number not in choices:
            raise ConfigError(key, f"expected {expected}, got {number}")
        return number

    def items(self, key: str, value: object, expected: str) -> list[object]:
        if isinstance(value, list | tuple):
            return list(value)
        raise ConfigError(key, f"expected a list of {expected}, got {show(value)}")


class Section:
    """One mapping of the profile: unknown keys are rejected as soon as it is opened."""

    def __init__(self, ctx: Context, path: str, value: object, allowed: Sequence[str]) -> None:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            what = f"the {path} section" if path else "the profile"
            raise ConfigError(
                path, f"expected {what} to be a mapping of keys ({', '.join(allowed)}), got {show(value)}"
            )
        for name in value:
            if not isinstance(name, str):
                raise ConfigError(path, f"keys must be strings, got the key {show(name)}")
            if name not in allowed:
                raise _unknown_key(self._join(path, name), name, allowed)
        self.ctx = ctx
        self.path = path
        self.data: Mapping[str, object] = value

    @staticmethod
    def _join(path: str, name: str) -> str:
        return f"{path}.{name}" if path else name

    def key(self, name: str) -> str:
        return self._join(self.path, name)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> object:
        return self.data.get(name, MISSING)

    def section(self, name: str, allowed: Sequence[str]) -> Section:
        return Section(self.ctx, self.key(name), self.data.get(name), allowed)

    def required(self, name: str, expected: str) -> object:
        value = self.data.get(name, MISSING)
        if value is MISSING or value is None:
            raise ConfigError(self.key(name), f"required key is missing; expected {expected}")
        return value

    def required_text(self, name: str, expected: str, *, missing: str | None = None,
                      secret: bool = False) -> Text:
        """A required string; `missing` is what the message for an absent key expects (default:
        `expected`), for a hint that only a wrongly typed value needs (such as quoting numbers)."""
        value = self.required(name, expected if missing is None else missing)
        return self.ctx.text(self.key(name), value, expected, secret=secret)

    def optional(self, name: str, expected: str, default: object) -> object:
        """The value, or MISSING when absent; an explicit null for a non-nullable key is an error."""
        value = self.data.get(name, MISSING)
        if value is None:
            shown = "[" + ", ".join(map(str, default)) + "]" if isinstance(default, list) else show(default)
            raise ConfigError(
                self.key(name),
                f"expected {expected}, got null (remove the key to use the default {shown})",
            )
        return value

    def integer(
        self, name: str, default: int, lo: int, hi: int, *, step: int = 1, what: str | None = None
    ) -> int:
        expected = what or f"an integer {lo}-{hi}"
        value = self.optional(name, expected, default)
        if value is MISSING:
            return default
        return self.ctx.integer(self.key(name), value, lo, hi, step=step, what=what)

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.optional(name, f"a number {lo:g}-{hi:g}", default)
        if value is MISSING:
            return default
        return self.ctx.number(self.key(name), value, lo, hi)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.optional(name, "true or false", default)
        if value is MISSING:
            return default
        return self.ctx.boolean(self.key(name), value)

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        value = self.optional(name, "one of " + ", ".join(choices), default)
        if value is MISSING:
            return default
        return self.ctx.choice(self.key(name), value, choices)

    def int_choice(self, name: str, default: int, choices: Sequence[int]) -> int:
        value = self.optional(name, " or ".join(str(c) for c in choices), default)
        if value is MISSING:
            return default
        return self.ctx.int_choice(self.key(name), value, choices)

    def text(self, name: str, default: str, expected: str) -> Text | None:
        """A non-nullable string with a default: None when absent."""
        value = self.optional(name, expected, default)
        if value is MISSING:
            return None
        return self.ctx.text(self.key(name), value, expected)

    def plain_text(self, name: str, default: str) -> str:
        """A string with a default, stripped: non-empty and without control characters."""
        text = self.text(name, default, "a non-empty string")
        if text is None:
            return default
        message = f"expected a non-empty string without control characters, got {text.shown}"
        return clean_text(self.key(name), text.value, message)

    def nullable_text(self, name: str, expected: str) -> Text | None:
        """A string that may be null; an empty string (e.g. from ``${X:-}``) also means null."""
        value = self.data.get(name)
        if value is None:
            return None
        text = self.ctx.text(self.key(name), value, expected + " or null")
        return text if text.value.strip() else None
