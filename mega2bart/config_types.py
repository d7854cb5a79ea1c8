"""Run settings declared once: `setting()` fields and the `RunConfig` base of `TrainConfig` and `PretrainConfig`.

A setting is one dataclass field made with `setting(default, help=..., ...)`. Its metadata is the
only description of the setting; the command line (`mega2bart train`/`pretrain` options are
generated from it in `mega2bart.cli_options`, and the `eval`/`summarize` generation options from the
`setting()` fields of `mega2bart.summarize.GenerationOptions`), the checks below and
`TrainingArguments` read it:

- `help`: what the setting does; the CLI option's help and the documentation of the YAML key.
- `flag`: the CLI option (True: `--field-name`; a string: that option, e.g. "--batch-size");
  a field without one is set in the YAML file or with `--set KEY=VALUE`.
- `min` / `above`: inclusive / exclusive lower bound, checked after the type conversion
  (None passes where the annotation allows it); `note` is added to that error.
- `aliases`: CLI words (any case) that stand for another value, e.g. {"none": None}.
- `choices`: the only CLI words (any case) the option takes, with their values.
- `training_arg`: how the field reaches `TrainingArguments` (`RunConfig.training_arguments_kwargs`):
  True passes it under its own name, a string under that name, False keeps it mega2bart's own
  (also for a field named like a `TrainingArguments` field that the run sets itself).

`RunConfig` loads a config from a YAML file, flags and `--set` values (`load`), checks types and
ranges (`coerce_fields`, run by `__post_init__`), saves it and picks the fields that go to
`TrainingArguments`.

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
- list[dict[...]]: a list of mappings (one mapping becomes a one-element list).
- dict[...]: a mapping.
- `X | None`: None is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from typing_extensions import Self

MAX_INT = 2**63 - 1
"""The largest integer a setting takes: what torch, numpy and the saved files hold (10**400 is no count)."""
_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off")


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | bool = False,
    min: float | None = None,
    above: float | None = None,
    note: str | None = None,
    aliases: Mapping[str, Any] | None = None,
    choices: Mapping[str, Any] | None = None,
    training_arg: str | bool | None = None,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field that carries its own description (see the module docstring for each key).

    `help` may span lines in the source; its whitespace is collapsed to single spaces.
    """
    metadata: dict[str, Any] = {"help": " ".join(help.split())}
    given = {
        "flag": flag or None,
        "min": min,
        "above": above,
        "note": note,
        "aliases": aliases,
        "choices": choices,
        "training_arg": training_arg,
    }
    metadata.update({key: value for key, value in given.items() if value is not None})
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def coerce_fields(instance: Any) -> None:
    """Check and convert every field of the dataclass `instance` to its annotated type (in place),
    then check the field's range (`min`, `above` in its metadata).

    Raises:
        ValueError: "`name` (value) must be <rule>" for the first field that does not fit.
    """
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        value = _coerce(field.name, getattr(instance, field.name), hints[field.name])
        _check_range(field, value, hints[field.name])
        setattr(instance, field.name, value)


def _check_range(field: dataclasses.Field, value: Any, annotation: Any) -> None:
    low, above = field.metadata.get("min"), field.metadata.get("above")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ValueError(f"`{field.name}` ({shown_number(value)}) must be at most 2**63 - 1 in size")
    if value is None or (low is None and above is None):
        return
    if (low is None or value >= low) and (above is None or value > above):
        return
    members = _union_members(annotation)
    if low == 1 and int in members and float not in members:
        rule = "a positive integer"
    else:
        rule = " and ".join(text for bound, text in ((low, f">= {low}"), (above, f"> {above}")) if bound is not None)
    if type(None) in members:
        rule += " or None"
    note = field.metadata.get("note")
    raise ValueError(f"`{field.name}` ({value!r}) must be {rule}" + (f" ({note})" if note else ""))


def shown_number(value: Any) -> str:
    """A number for an error message; an integer too long to read (10**400) by its number of digits."""
    if isinstance(value, int) and abs(value) >= 10**20:
        return f"an integer of {len(str(abs(value)))} digits"
    return repr(value)


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
    if origin is list and _is_mapping_type(typing.get_args(option)[0]):  # list[dict[...]]: a list of mappings
        items = [value] if isinstance(value, dict) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, dict) for v in items):
            raise TypeError("not a list of mappings")
        return [dict(v) for v in items]
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


def _is_mapping_type(annotation: Any) -> bool:
    return annotation is dict or typing.get_origin(annotation) is dict


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
            words.append("a list of mappings" if _is_mapping_type(typing.get_args(option)[0]) else "a list of strings")
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


class RunConfig:
    """Base of the run configs (`TrainConfig`, `PretrainConfig`): dataclasses of `setting()` fields.

    One loader for both: `load(path, overrides)` reads the YAML file and puts the overrides (CLI
    flags, `--set` values) on top; `from_dict` refuses unknown and missing keys; `__post_init__`
    checks types and ranges (`coerce_fields`); subclasses add the checks between fields.
    """

    file_name: ClassVar[str]
    """Name of the resolved config that `save` writes into the output directory."""
    output_dir: str  # a field of every subclass: where the run writes
    seed: int  # likewise: the seed of the run (`transformers.set_seed`)

    def __post_init__(self) -> None:
        coerce_fields(self)  # types from the annotations: "1e-4" -> 1e-4, "off" -> False, else one-line errors

    def check_seed(self) -> None:
        """Refuse a `seed` that `set_seed` cannot use: it seeds numpy too, which takes [0, 2**32) only."""
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"`seed` ({self.seed}) must be in [0, 2**32) (numpy's seed range)")

    # ------------------------------------------------------------------ files

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None) -> Self:
        """The config of the YAML file `path` (None: no file) with `overrides` on top (flags win)."""
        data = read_yaml_mapping(path, cls.__name__) if path is not None else {}
        source = os.fspath(path) if path is not None else "command line"
        return cls.from_dict({**data, **(overrides or {})}, source=source)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> Self:
        """Read a YAML mapping of field names; `overrides` (e.g. CLI flags that were given) win."""
        return cls.load(path, overrides)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "dict") -> Self:
        """Build from a mapping of field names; unknown or missing required keys raise, naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{source}: unknown {cls.__name__} field(s) {unknown}; valid fields are {sorted(names)}")
        missing = [name for name in cls.required_fields() if name not in data]
        if missing:
            raise ValueError(
                f"{source}: no value for the required {cls.__name__} field(s) {missing}: set them in the YAML file "
                "or on the command line"
            )
        return cls(**data)

    @classmethod
    def required_fields(cls) -> list[str]:
        """Names of the fields without a default (e.g. `model`): a config needs a value for each."""
        return [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]  (subclasses are dataclasses)

    def save(self, directory: str | os.PathLike | None = None) -> Path:
        """Write the resolved config to `<directory or output_dir>/<file_name>`."""
        import yaml

        path = Path(directory or self.output_dir) / self.file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        return path

    # ------------------------------------------------------------------ TrainingArguments

    def training_arguments_kwargs(self, arguments_class: type) -> dict[str, Any]:
        """The fields that go to `arguments_class` (`TrainingArguments` or a subclass), under its names.

        Each field's `training_arg` decides (see the module docstring); the run adds what it
        derives (strategies, resolved devices) on top.
        """
        targets = self.training_arg_targets(arguments_class)
        return {targets[name]: getattr(self, name) for name in targets if targets[name] is not None}

    @classmethod
    def training_arg_targets(cls, arguments_class: type) -> dict[str, str | None]:
        """{field name: the `arguments_class` field it sets, or None for mega2bart's own}.

        Raises:
            ValueError: a field passed on under a name `arguments_class` lacks (a typo), or a field
                named like an `arguments_class` field that does not say whether it is passed on.
        """
        known = {f.name for f in dataclasses.fields(arguments_class)}
        targets: dict[str, str | None] = {}
        for field in dataclasses.fields(cls):
            marker = field.metadata.get("training_arg")
            target = field.name if marker is True else marker or None
            where = f"{cls.__name__}.{field.name}"
            if target is not None and target not in known:
                close = difflib.get_close_matches(target, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"{where} is passed to {arguments_class.__name__} as {target!r}, which is not one of its "
                    f"fields{hint}: check the spelling of the field or of its training_arg"
                )
            if marker is None and field.name in known:
                raise ValueError(
                    f"{where} has the name of a {arguments_class.__name__} field but no training_arg: give it "
                    "training_arg=True (passed on as it is) or training_arg=False (the run sets it itself)"
                )
            targets[field.name] = target
        return targets


def refuse_file_output_dir(output_dir: Path) -> None:
    """Refuse an `output_dir` that is a file: a run writes a folder of checkpoints and results there."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output_dir {str(output_dir)!r} is a file: pass a directory path (--output-dir)")


def output_overlap(output: str | os.PathLike, source: str | os.PathLike) -> str | None:
    """How the folder `output` overlaps the local model folder `source`: "is", "holds", "is inside", or None (no
    overlap, or `source` is no local path, e.g. a Hub id). Compared as written (a checkpoint folder that is itself
    a symlink) and with symlinks resolved, so that no spelling of one folder passes for another."""
    read = Path(source).expanduser()
    if not read.exists():
        return None
    out = Path(output).expanduser()
    for first, second in ((os.path.abspath(out), os.path.abspath(read)), (out.resolve(), read.resolve())):
        first, second = Path(first), Path(second)
        if first == second:
            return "is"
        if first in second.parents:
            return "holds"
        if second in first.parents:
            return "is inside"
    return None


def refuse_output_over_model(output_dir: str | os.PathLike, model: str, field: str) -> None:
    """Refuse an `output_dir` that is the model folder a run reads (`field`: "model", "encoder"), holds it or lies
    inside it (`output_overlap`): the run writes its checkpoints and final weights there, and `train --overwrite`
    first deletes the previous run's, the model among them (issue 34).

    Raises:
        ValueError: naming both folders and how they overlap; nothing has been written or deleted.
    """
    relation = output_overlap(output_dir, model)
    if relation:
        raise ValueError(
            f"output_dir {str(output_dir)!r} (--output-dir) {relation} the model this run reads ({field} {model!r}): "
            "the run writes its checkpoints and weights there (and --overwrite first deletes the previous run's), so "
            "the model would be lost; nothing was deleted: pass an --output-dir outside it"
        )


def field_help(field: dataclasses.Field) -> str:
    """The `help` of a `setting()` field.

    Raises:
        ValueError: the field was declared without `setting(..., help=...)`.
    """
    text = field.metadata.get("help")
    if not text:
        raise ValueError(f"field {field.name!r} has no help: declare it with setting(..., help='what it does')")
    return text


__all__ = [
    "RunConfig",
    "coerce_fields",
    "field_help",
    "output_overlap",
    "read_yaml_mapping",
    "refuse_file_output_dir",
    "refuse_output_over_model",
    "setting",
    "shown_number",
]
