"""The one cattrs converter: strict scalar and string-list hooks, path-precise error reports."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from tokenhub._redact import describe, quote, safe_name
from tokenhub._secret import Secret

__all__ = ["MAX_INT", "FieldError", "converter", "string_list", "validation_errors"]

converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)

#: The largest integer a config may hold: beyond it no count or size means anything.
MAX_INT = 2**53


class FieldError(ValueError):
    """A value that does not fit its field; the message is safe to show (it quotes no secret)."""


def _str(v: Any, _: type) -> str:
    if not isinstance(v, str):
        raise FieldError(f"expected a string, got {quote(v)}")
    if not v.isascii():
        try:
            v.encode()
        except UnicodeEncodeError:
            raise FieldError("not valid Unicode (a lone surrogate)") from None
    return v


def _float(v: Any, _: type) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise FieldError(f"expected a number, got {quote(v)}")
    try:
        f = float(v)
    except OverflowError:
        raise FieldError("a number too large") from None
    if not math.isfinite(f):
        raise FieldError(f"expected a finite number, got {describe(f)}")
    return f


def _int(v: Any, _: type) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise FieldError(f"expected an integer, got {quote(v)}")
    if not -MAX_INT <= v <= MAX_INT:
        raise FieldError("an integer too large")
    return v


def _bool(v: Any, _: type) -> bool:
    if not isinstance(v, bool):
        raise FieldError(f"expected true or false, got {quote(v)}")
    return v


converter.register_structure_hook(str, _str)
converter.register_structure_hook(float, _float)
converter.register_structure_hook(int, _int)
converter.register_structure_hook(bool, _bool)
converter.register_structure_hook(Secret, lambda v, _: Secret(_str(v, str)))


def _literal(v: Any, t: Any) -> Any:
    choices = get_args(t)
    if isinstance(v, str) and v in choices:
        return v
    raise FieldError(f"expected one of {', '.join(map(repr, choices))}")


def _is_literal(t: Any) -> bool:
    return bool(get_origin(t) == Literal)


converter.register_structure_hook_func(_is_literal, _literal)


def _mapping_first(cls: type) -> Callable[[Any, type], Any]:
    inner: Callable[[Any, type], Any] = converter.gen_structure_attrs_fromdict(cls)

    def structure(v: Any, t: type) -> Any:
        if not isinstance(v, Mapping):
            # Only what it is: a string here is often a password or key in the wrong place.
            raise FieldError(f"expected a mapping, got {describe(v)}")
        return inner(v, t)

    return structure


converter.register_structure_hook_factory(attrs.has, _mapping_first)


# Mappings hold headers, options and the vault's password source: their values are never shown.
def _str_mapping(v: Any, _: type) -> dict[str, str]:
    if not isinstance(v, Mapping):
        raise FieldError(f"expected a mapping, got {describe(v)}")
    if not all(isinstance(k, str) for k in v):
        raise FieldError("expected string keys")
    bad = sorted(safe_name(k) for k, x in v.items() if not isinstance(x, str))
    if bad:
        raise FieldError(f"expected string values; not a string: {', '.join(bad)}")
    bad = sorted(safe_name(k) for k, x in v.items() if not _encodable(x))
    if bad:
        raise FieldError(f"expected valid Unicode (a lone surrogate?) in: {', '.join(bad)}")
    return dict(v)


def _any_mapping(v: Any, _: type) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise FieldError(f"expected a mapping, got {describe(v)}")
    if not all(isinstance(k, str) for k in v):
        raise FieldError("expected a mapping with string keys")
    return dict(v)


def _encodable(s: str) -> bool:
    if s.isascii():
        return True
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


converter.register_structure_hook_func(lambda t: t == Mapping[str, str], _str_mapping)
converter.register_structure_hook_func(lambda t: t == Mapping[str, Any], _any_mapping)


def string_list(v: Any, what: str) -> list[str]:
    """``v`` as a list of strings: a list, tuple or set of them, never a bare string nor null."""
    if not isinstance(v, list | tuple | set | frozenset) or not all(
        isinstance(c, str) and _encodable(c) for c in v
    ):
        got = ", got null (write [] for none)" if v is None else ""
        raise FieldError(f"expected a list of {what}{got}")
    return list(v)


# ``null`` is no list: it stands for "none" only where a field says so (``providers: null``
# in a policy: any provider); elsewhere an empty list is written ``[]``.
converter.register_structure_hook_func(
    lambda t: t == frozenset[str], lambda v, _: frozenset(string_list(v, "strings"))
)
converter.register_structure_hook_func(
    lambda t: t == frozenset[str] | None,
    lambda v, _: None if v is None else frozenset(string_list(v, "strings")),
)
converter.register_structure_hook_func(
    lambda t: t == tuple[str, ...], lambda v, _: tuple(string_list(v, "names"))
)


def validation_errors(exc: BaseException, path: str = "") -> list[tuple[str, str]]:
    """Flatten a cattrs exception tree into ``(dotted.path, reason)`` pairs."""
    out: list[tuple[str, str]] = []
    _walk(exc, path, out)
    return out


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{safe_name(key)}" if path else safe_name(key)


def _walk(exc: BaseException, path: str, out: list[tuple[str, str]]) -> None:
    if isinstance(exc, ForbiddenExtraKeysError):
        out.extend((_join(path, k), "unknown key") for k in sorted(exc.extra_fields, key=safe_name))
        return
    if isinstance(exc, ClassValidationError | IterableValidationError):
        for sub in exc.exceptions:
            _walk(sub, _join(path, _note_key(sub)) if _note_key(sub) is not None else path, out)
        return
    if isinstance(exc, KeyError):
        out.append((path, "required key missing"))
        return
    # Only this module's own messages are shown: another exception's text may quote the value.
    out.append((path, str(exc) if isinstance(exc, FieldError) else f"invalid value ({_kind(exc)})"))


def _kind(exc: BaseException) -> str:
    return type(exc).__name__


def _note_key(exc: BaseException) -> object | None:
    for note in getattr(exc, "__notes__", ()):
        name: object = getattr(note, "name", None)
        if name is not None:
            return name
        if isinstance(note, IterableValidationNote):
            index: object = note.index
            return index
    return None
