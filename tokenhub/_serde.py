"""The one cattrs converter: strict scalar and string-list hooks, path-precise error reports."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from tokenhub._secret import Secret

__all__ = ["converter", "string_list", "validation_errors"]

converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)

_SHOW = 40


def _show(v: object) -> str:
    r = repr(v)
    return r if len(r) <= _SHOW else r[: _SHOW - 3] + "..."


def _what(v: object) -> str:
    if isinstance(v, bool):
        return _show(v)
    if isinstance(v, dict | list | tuple):
        return f"a {type(v).__name__}"
    return _show(v)


def _str(v: Any, _: type) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {_what(v)}")
    return v


def _float(v: Any, _: type) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"expected a number, got {_what(v)}")
    return float(v)


def _int(v: Any, _: type) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {_what(v)}")
    return v


def _bool(v: Any, _: type) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true or false, got {_what(v)}")
    return v


converter.register_structure_hook(str, _str)
converter.register_structure_hook(float, _float)
converter.register_structure_hook(int, _int)
converter.register_structure_hook(bool, _bool)
converter.register_structure_hook(Secret, lambda v, _: Secret(_str(v, str)))


def _mapping_first(cls: type) -> Callable[[Any, type], Any]:
    inner: Callable[[Any, type], Any] = converter.gen_structure_attrs_fromdict(cls)

    def structure(v: Any, t: type) -> Any:
        if not isinstance(v, Mapping):
            raise TypeError(f"expected a mapping, got {_what(v)}")
        return inner(v, t)

    return structure


converter.register_structure_hook_factory(attrs.has, _mapping_first)


def _str_mapping(v: Any, _: type) -> dict[str, str]:
    if not isinstance(v, Mapping):
        raise TypeError(f"expected a mapping, got {_what(v)}")
    bad = sorted(str(k) for k, x in v.items() if not isinstance(k, str) or not isinstance(x, str))
    if bad:
        raise TypeError(f"expected string values; not a string: {', '.join(bad)}")
    return dict(v)


def _any_mapping(v: Any, _: type) -> dict[str, Any]:
    if not isinstance(v, Mapping) or not all(isinstance(k, str) for k in v):
        raise TypeError(f"expected a mapping with string keys, got {_what(v)}")
    return dict(v)


converter.register_structure_hook_func(lambda t: t == Mapping[str, str], _str_mapping)
converter.register_structure_hook_func(lambda t: t == Mapping[str, Any], _any_mapping)


def string_list(v: Any, what: str) -> list[str]:
    """``v`` as a list of strings: a list, tuple or set of them, never a bare string."""
    if not isinstance(v, list | tuple | set | frozenset) or not all(isinstance(c, str) for c in v):
        raise TypeError(f"expected a list of {what}")
    return list(v)


converter.register_structure_hook_func(
    lambda t: t in (frozenset[str], frozenset[str] | None),
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
    return f"{path}.{key}" if path else str(key)


def _walk(exc: BaseException, path: str, out: list[tuple[str, str]]) -> None:
    if isinstance(exc, ForbiddenExtraKeysError):
        out.extend((_join(path, k), "unknown key") for k in sorted(exc.extra_fields))
        return
    if isinstance(exc, ClassValidationError | IterableValidationError):
        for sub in exc.exceptions:
            _walk(sub, _join(path, _note_key(sub)) if _note_key(sub) is not None else path, out)
        return
    if isinstance(exc, KeyError):
        out.append((path, "required key missing"))
        return
    out.append((path, str(exc) or type(exc).__name__))


def _note_key(exc: BaseException) -> object | None:
    for note in getattr(exc, "__notes__", ()):
        name: object = getattr(note, "name", None)
        if name is not None:
            return name
        if isinstance(note, IterableValidationNote):
            index: object = note.index
            return index
    return None
