"""Type checks for the run configs (`TrainConfig`, `PretrainConfig`), read from the dataclass annotations.

YAML and `--set KEY=VALUE` deliver values of the wrong type in ordinary use: PyYAML reads `1e-4`
as the string "1e-4" (YAML 1.1 wants a dot: `1.0e-4`), and a quoted `"off"` stays a string that
Python would take as true. `coerce_fields` converts the unambiguous cases in place and refuses
the rest with one line naming the field, the value and the rule:

- float: int, float, or a string `float()` parses ("1e-4"); not bool, not nan/inf.
- int: int, an integral float (`3.0`), or a string of an integer ("16", "1e3"); not bool.
- bool: bool, or one of the strings true/false/yes/no/on/off (any case); not 0/1.
- str: str only (quote numbers in YAML: `run_name: "2024"`).
- Literal[...]: one of the listed values (bool members also take the bool strings above).
- list[str]: a list of str/path (one str or path becomes a one-element list).
- dict[...]: a mapping.
- `X | None`: None is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from typing import Any, Literal

_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off")


def coerce_fields(instance: Any) -> None:
    """Check and convert every field of the dataclass `instance` to its annotated type (in place).

    Raises:
        ValueError: "`name` (value) must be <rule>" for the first field that does not fit.
    """
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        setattr(instance, field.name, _coerce(field.name, value, hints[field.name]))


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    options = _union_members(annotation)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"`{name}` (None) must be {_describe(options)}")
    for option in options:
        if option is type(None):
            continue
        try:
            return _coerce_one(value, option)
        except (TypeError, ValueError):
            continue
    raise ValueError(f"`{name}` ({value!r}) must be {_describe(options)}")


def _union_members(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def _coerce_one(value: Any, option: Any) -> Any:
    origin = typing.get_origin(option)
    if origin is Literal:
        choices = typing.get_args(option)
        if value in choices and type(value) in {type(c) for c in choices}:  # True == 1, but 1 is not a choice
            return value
        if isinstance(value, str) and any(isinstance(c, bool) for c in choices):
            as_bool = _to_bool(value)
            if as_bool in choices:
                return as_bool
        raise ValueError("not a choice")
    if origin is list:
        items = [value] if isinstance(value, (str, os.PathLike)) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, (str, os.PathLike)) for v in items):
            raise TypeError("not a list of strings")
        return [os.fspath(v) for v in items]
    if origin is dict or option is dict:
        if not isinstance(value, dict):
            raise TypeError("not a mapping")
        return value
    if option is Any:
        return value
    if option is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return _to_bool(value)
        raise TypeError("not a bool")
    if option is int:
        return _to_int(value)
    if option is float:
        return _to_float(value)
    if option is str:
        if isinstance(value, str):
            return value
        raise TypeError("not a string")
    raise TypeError(f"unsupported annotation {option!r}")  # a new field type: extend this function


def _to_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("not a bool string")


def _to_float(value: Any) -> int | float:
    if isinstance(value, bool):
        raise TypeError("bool is not a number")
    if isinstance(value, int):
        return value  # an int is a valid float value; kept as int so `warmup_steps: 20` stays a count
    number = float(value) if isinstance(value, (float, str)) else None
    if number is None or not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("bool is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            value = float(text)  # "1e3"; raises ValueError for text that is no number
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise ValueError("not an integer")


def read_yaml_mapping(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """The mapping in the YAML file `path` (empty file: {}); one-line errors for a missing file or bad YAML."""
    import yaml

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"config file {path!r} is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"config file {path!r} is not UTF-8 text ({exc.reason}): pass a YAML file") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path!r} must hold a YAML mapping of {what} fields, got {type(data).__name__}")
    return data


def _describe(options: list[Any]) -> str:
    words = []
    for option in options:
        origin = typing.get_origin(option)
        if option is type(None):
            words.append("null")
        elif origin is Literal:
            words.append("one of " + ", ".join(repr(c) for c in typing.get_args(option)))
        elif origin is list:
            words.append("a list of strings")
        elif origin is dict or option is dict:
            words.append("a mapping")
        elif option is bool:
            words.append("true/false (or yes/no, on/off)")
        elif option is int:
            words.append("an integer")
        elif option is float:
            words.append("a finite number (e.g. 1e-4)")
        elif option is str:
            words.append("a string (quote numbers in YAML)")
        else:
            words.append(getattr(option, "__name__", repr(option)))
    return " or ".join(words)


__all__ = ["coerce_fields", "read_yaml_mapping"]
