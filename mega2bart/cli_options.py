"""The typer options that `mega2bart` commands take from settings dataclasses, and the CLI's one-line failure.

`train` and `pretrain` take their options from the fields of `TrainConfig` / `PretrainConfig`
(`with_run_config`), `eval` and `summarize` their generation options from the fields of
`GenerationOptions` (`with_generation_options`), both through `with_fields_of`: each setting is declared
once, as a field (`mega2bart.config_types.setting`), with its help, flag and range.

`fail` lives here, not in `mega2bart.cli`, because a generated option's bad value (a word outside its
`choices`, a malformed `--set`, a config that does not load) fails as a command's own checks do. So do the
checks every writing command shares: `require_writable` (before anything loads) and `os_error_line` /
`one_line_os_errors` (the operating system's errors, whenever they come, as one line naming the path).
`with_command_end` gives a command an end that `at_command_end` callbacks run at (the output lock's release).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import errno
import functools
import inspect
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import click
import typer

from .config_types import MAX_INT, RunConfig, field_help, shown_number
from .summarize import MAX_CONTEXT, GenerationOptions

ERROR_EXIT_CODE = 2


def fail(message: str) -> NoReturn:
    """A user error: `error: MESSAGE` on stderr, exit code `ERROR_EXIT_CODE`, no traceback."""
    shown = message.encode("utf-8", "backslashreplace").decode("utf-8")  # a file name's undecodable bytes as \xNN
    typer.secho(f"error: {shown}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=ERROR_EXIT_CODE)


# what to do about an operating-system error while a command reads or writes its files
_OS_ERROR_FIXES = {
    errno.ENOSPC: "free space there, or write to another place, and run the command again",
    errno.EDQUOT: "free space within your quota, or write to another place, and run the command again",
    errno.EROFS: "that file system is mounted read-only: write to another place",
    errno.EACCES: "you may not write or read there: change its permissions, or choose another place",
    errno.EPERM: "the operation is not permitted there: change its permissions, or choose another place",
    errno.ELOOP: "it is a loop of symbolic links: remove or fix the link, or choose another path",
    errno.EISDIR: "a folder stands where a file must go: move it away, or choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.EIO: "the device reported an input/output error: check the disk, or write to another place",
}


def os_error_line(exc: BaseException, path: str | os.PathLike | None = None) -> str | None:
    """The one line of an operating-system error (ENOSPC, EROFS, ELOOP, EACCES, EISDIR, ...) anywhere in the chain
    of `exc`, or None when there is none: the path (the error's own, else `path`: the command's output), what
    went wrong and what to do. Libraries written in Rust (safetensors, tokenizers) report one only in their
    message ("... (os error 28)"); torch wraps one in a RuntimeError."""
    error, number = exc, None
    while error is not None and number is None:
        if isinstance(error, OSError) and error.errno is not None:
            number = error.errno
            break
        found = re.search(r"os error (\d+)|Os \{ code: (\d+)", str(error))
        if found:
            number = int(found.group(1) or found.group(2))
            break
        error = error.__cause__ or error.__context__
    if number is None or number not in errno.errorcode:
        return None
    names = [name for name in (getattr(error, "filename", None), getattr(error, "filename2", None)) if name]
    where = " -> ".join(repr(os.fsdecode(name)) for name in names) or (repr(os.fspath(path)) if path else "a file")
    fix = _OS_ERROR_FIXES.get(number, "fix the cause, or choose another place")
    return f"{where}: {os.strerror(number)} ({errno.errorcode[number]}): {fix}"


def one_line_os_errors(command: Callable[..., None], output_options: Iterable[str]) -> Callable[..., None]:
    """`command` with the operating system's errors as one line (`os_error_line`) and exit code 2; the path of a
    message that names none is the command's output (the first of its `output_options` given)."""

    @functools.wraps(command)
    def run(**options: Any) -> None:
        try:
            command(**options)
        except (typer.Exit, click.exceptions.Abort):  # typer.Exit is a RuntimeError: it passes through as it is
            raise
        except Exception as exc:
            output = next((options[name] for name in output_options if options.get(name) is not None), None)
            line = os_error_line(exc, output)
            if line is None:
                raise
            fail(line)

    return run


def require_writable(path: Path, what: str) -> None:
    """Fail in one line, before anything loads, when `path` (a file or folder to create) cannot be written: its
    nearest existing ancestor is a file, or a folder this process may not write in."""
    target = Path(path).expanduser().absolute()
    if target.is_symlink() and not target.exists():  # a loop of links, or a link to a place that is gone
        try:
            os.stat(target)
        except OSError as exc:  # ELOOP, or ENOENT naming the missing target
            fail(f"{what} {str(path)!r} is a symbolic link that leads nowhere: {os_error_line(exc, path)}")
    # an existing folder must be writable itself; an existing file, pipe or device is the command's to judge
    # (replaced, skipped or written to); a new path needs its nearest existing ancestor to be a writable folder
    if target.exists() and not target.is_dir():
        return
    ancestor = target
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        fail(f"{what} {str(path)!r} cannot be written: {str(ancestor)!r} is a file, not a folder; choose another path")
    if os.statvfs(ancestor).f_flag & os.ST_RDONLY:
        fail(f"{what} {str(path)!r} cannot be written: {str(ancestor)!r} is on a read-only file system")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        fail(f"{what} {str(path)!r} cannot be written: no write permission in {str(ancestor)!r}")


def require_one_of(flag: str, word: str, choices: Iterable[str], given: str | None = None) -> None:
    """`fail` unless `word` is one of `choices`: "FLAG must be A, B or C (got 'WORD')" (`given`, when
    the word was lowered from it, is what the message shows)."""
    if word not in choices:
        *first, last = choices
        shown = word if given is None else given  # as the user typed it
        fail(f"{flag} must be {', '.join(first)} or {last} (got {shown!r})")


MAX_TOKENS = MAX_CONTEXT
"""The most tokens a length option takes (an input, a summary, generated tokens): what a summarizer accepts."""
MAX_SEED = 2**32 - 1
"""numpy's largest seed (`transformers.set_seed` seeds numpy too; `RunConfig.check_seed`)."""


def check_number(flag: str, value: float | None, low: float, high: float) -> None:
    """`fail` unless `value` (None passes) is a finite number in [low, high]: "FLAG (VALUE) must be ... in [LOW, HIGH]"."""
    finite = isinstance(value, int) or (value is not None and math.isfinite(value))  # 10**400 is an int, not inf
    if value is None or (finite and low <= value <= high):
        return
    kind = "a whole number" if isinstance(value, int) else "a finite number"
    fail(f"{flag} ({shown_number(value)}) must be {kind} in [{low:,}, {high:,}]")


NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "length": (1, MAX_TOKENS),  # plan
    "new_tokens": (1, MAX_TOKENS),
    "label_tokens": (1, MAX_TOKENS),
    "batch": (1, 2**16),
    "beams": (1, 1024),
    "tflops": (1e-6, 1e6),
    "max_input_length": (1, MAX_TOKENS),  # build
    "max_new_tokens": (1, MAX_TOKENS),
    "min_new_tokens": (0, MAX_TOKENS),
    "num_beams": (1, 1024),
    "seed": (0, MAX_SEED),  # build, eval
    "max_input_tokens": (3, MAX_TOKENS),  # eval, summarize
    "batch_size": (1, 2**16),
    "limit": (1, MAX_INT),
    "bootstrap_samples": (0, 10**7),
    "window_overlap": (0, MAX_TOKENS),
    "max_levels": (1, 100),
    "top_k": (1, 10**6),  # fill-mask
}
"""The range of each numeric option of the commands' own (not generated from settings: those have theirs in
`setting()`), by parameter name: the one place they are declared, checked by `with_ranges`."""


def with_ranges(command: Callable[..., None]) -> Callable[..., None]:
    """Check the numeric options of a typer command named in `NUMBER_RANGES` where they are parsed, before it runs:
    one line naming the flag, the value and the range (`check_number`), for numbers no machine holds (10**400,
    inf, nan) as for values merely out of range."""
    names = [name for name in inspect.signature(command).parameters if name in NUMBER_RANGES]

    def run(**options: Any) -> None:
        for name in names:
            check_number("--" + name.replace("_", "-"), options[name], *NUMBER_RANGES[name])
        command(**options)

    return _same_command(run, command)


def _same_command(run: Callable[..., None], command: Callable[..., None]) -> Callable[..., None]:
    """`run`, a wrapper of `command`, with its name, help and signature (what typer reads)."""
    run.__name__, run.__qualname__, run.__doc__ = command.__name__, command.__qualname__, command.__doc__
    run.__signature__ = inspect.signature(command, eval_str=True)  # type: ignore[attr-defined]
    return run


_COMMAND_ENDS: list[contextlib.ExitStack] = []
"""The ends of the commands running in this process (`with_command_end`), innermost last."""


def at_command_end(callback: Callable[[], Any]) -> None:
    """Run `callback` when the running command ends, whether it returns or fails (outside a command: at exit)."""
    if _COMMAND_ENDS:
        _COMMAND_ENDS[-1].callback(callback)
    else:
        atexit.register(callback)


def with_command_end(command: Callable[..., None]) -> Callable[..., None]:
    """Run `command` (a typer command function) with an end that `at_command_end` callbacks run at: a command run
    in-process (typer's CliRunner, a notebook) releases what it held before the next one starts."""

    def run(**options: Any) -> None:
        with contextlib.ExitStack() as end:
            _COMMAND_ENDS.append(end)
            try:
                command(**options)
            finally:
                _COMMAND_ENDS.pop()

    return _same_command(run, command)


def _option_type(annotation: Any) -> Any:
    """The type typer parses a field's option as: `X | None` -> X, Literal (or bool-or-Literal) -> str."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
    else:
        members = [annotation]
    if len(members) == 1 and members[0] in (bool, int, float, str):
        return members[0]
    if str in members and all(typing.get_origin(member) in (list, dict) for member in members if member is not str):
        return str  # a spec written on the command line, a structure in the YAML file (TrainConfig.curriculum)
    if len(members) == 1 and typing.get_origin(members[0]) is list:
        return list[str]
    if all(member is bool or typing.get_origin(member) is Literal for member in members):
        return str  # e.g. bf16: auto | true | false, turned into values by the field's `choices`
    raise TypeError(
        f"no command-line type for {annotation!r}: give the field no flag (--set only) or extend _option_type"
    )


def _flag(field: dataclasses.Field) -> str:
    flag = field.metadata["flag"]
    return flag if isinstance(flag, str) else "--" + field.name.replace("_", "-")


def _shown_default(field: dataclasses.Field) -> str | bool:
    """The config default for `--help` (the option's own default is None: an option not given leaves the
    YAML file's value or the field default)."""
    if field.default is dataclasses.MISSING or field.default is None:
        return False
    return str(field.default)


def _field_option(field: dataclasses.Field, annotation: Any) -> inspect.Parameter:
    """The typer option of a config field with a `flag`: its type from the annotation, its help from the field."""
    kind, flag = _option_type(annotation), _flag(field)
    declaration = f"{flag}/--no-{flag.removeprefix('--')}" if kind is bool else flag
    option = typer.Option(declaration, help=field_help(field), show_default=_shown_default(field))
    return inspect.Parameter(
        field.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
    )


def _flag_value(field: dataclasses.Field, given: Any) -> Any:
    """A given option's value, with the field's `choices` or `aliases` words (any case) turned into values."""
    if not isinstance(given, str):
        return given
    word = given.lower()
    choices = field.metadata.get("choices")
    if choices is not None:
        require_one_of(_flag(field), word, choices, given=given)
        return choices[word]
    aliases = field.metadata.get("aliases", {})
    return aliases[word] if word in aliases else given


def _parse_set(items: list[str] | None, what: str) -> dict:
    """`--set key=value` pairs; values are YAML (`--set eval_split=null --set freeze=encoder`)."""
    import yaml

    values = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            fail(f"--set expects KEY=VALUE (a {what} field), got {item!r}")
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            fail(f"--set {item!r}: the value is not valid YAML; quote it (--set 'KEY=\"VALUE\"')")
    return values


def with_fields_of(
    name: str, parameters: list[inspect.Parameter], build: Callable[[dict[str, Any]], Any], reserved: Iterable[str] = ()
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Turn `command(..., NAME: X, ...)` into a typer command whose parameter NAME is replaced, at its
    place, by the options `parameters`; on a call, `build(options)` takes their values out of the
    given options and returns the value the command gets as NAME.

    The one mechanism behind `with_run_config` and `with_generation_options`. `reserved`: further
    names the command's own options must not take (they clash with `parameters` too).
    """

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        keyword = inspect.Parameter.KEYWORD_ONLY
        own = [p.replace(kind=keyword) for p in inspect.signature(command, eval_str=True).parameters.values()]
        place = [p.name for p in own].index(name)
        kept = own[:place] + own[place + 1 :]
        clashes = sorted({p.name for p in kept} & {*reserved, *(p.name for p in parameters)})
        if clashes:
            raise TypeError(f"{command.__name__}: options {clashes} are also generated options or fields: rename them")

        def run(**options: Any) -> None:
            options[name] = build(options)
            command(**options)

        run.__name__, run.__qualname__, run.__doc__ = command.__name__, command.__qualname__, command.__doc__
        run.__signature__ = inspect.Signature([*kept[:place], *parameters, *kept[place:]])  # type: ignore[attr-defined]  (what typer reads)
        return run

    return decorate


def _flagged_fields(options_class: type) -> tuple[list[dataclasses.Field], list[inspect.Parameter]]:
    """The fields of the dataclass `options_class` with a `flag`, and their typer options."""
    hints = typing.get_type_hints(options_class)
    flagged = [field for field in dataclasses.fields(options_class) if field.metadata.get("flag")]
    return flagged, [_field_option(field, hints[field.name]) for field in flagged]


def _given(flagged: list[dataclasses.Field], options: dict[str, Any]) -> dict[str, Any]:
    """Take the options of the `flagged` fields out of `options`: {field name: value} of those given."""
    values = {}
    for field in flagged:
        given = options.pop(field.name)
        if given is not None and given != []:
            values[field.name] = _flag_value(field, given)
    return values


def with_run_config(
    config_class: type[RunConfig], missing: str
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Turn `command(run_config, **own_options)` into a typer command whose options are `--config`, one
    option per field of `config_class` with a `flag`, `--set`, then the command's own.

    The command gets the config loaded by `RunConfig.load`: the YAML file, the given options on top,
    `--set` values on top of those. `missing` is the error when a required field has no value and
    there is no `--config`.
    """
    flagged, field_options = _flagged_fields(config_class)
    fields = dataclasses.fields(config_class)
    name = config_class.__name__
    set_only = ", ".join(field.name for field in fields if not field.metadata.get("flag"))
    config_help = f"YAML file of {name} fields; flags given here win."
    set_help = f"Any other {name} field: KEY=VALUE (YAML value); {set_only}."
    keyword = inspect.Parameter.KEYWORD_ONLY
    config_option = inspect.Parameter(
        "config", keyword, default=None, annotation=Annotated[Path | None, typer.Option(help=config_help)]
    )
    set_option = inspect.Parameter(
        "set_", keyword, default=None, annotation=Annotated[list[str] | None, typer.Option("--set", help=set_help)]
    )

    def load(options: dict[str, Any]) -> RunConfig:
        overrides = _given(flagged, options)
        config_file = options.pop("config")
        overrides.update(_parse_set(options.pop("set_"), name))
        if config_file is None and not set(config_class.required_fields()) <= set(overrides):
            fail(missing)
        try:
            return config_class.load(config_file, overrides)
        except (ValueError, FileNotFoundError) as exc:
            fail(str(exc))

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        first = next(iter(inspect.signature(command).parameters))
        parameters = [config_option, *field_options, set_option]
        return with_fields_of(first, parameters, load, reserved=[f.name for f in fields])(command)

    return decorate


def with_generation_options(command: Callable[..., None]) -> Callable[..., None]:
    """Turn the parameter `generation: GenerationOptions` of `command` into one option per field of
    `GenerationOptions` (declared there once); an invalid combination is a `fail` with its message."""
    flagged, field_options = _flagged_fields(GenerationOptions)

    def build(options: dict[str, Any]) -> GenerationOptions:
        try:
            return GenerationOptions(**_given(flagged, options))
        except ValueError as exc:
            fail(str(exc))

    return with_fields_of("generation", field_options, build)(command)


def plan_check(enabled: bool, check: str, *args: Any) -> None:
    """The CUDA pre-flight of train/eval/summarize (`mega2bart.plan.preflight_*`): a run that does not fit stops here."""
    if not enabled:
        return
    from . import plan as planner

    if check == "preflight_generate":  # (model, context, batch size, GenerationOptions, dtype)
        model, context, batch_size, generation, dtype = args
        args = (model, context, batch_size, generation.num_beams, generation.max_new_tokens, dtype)
    try:
        getattr(planner, check)(*args)
    except planner.PlanError as exc:
        fail(str(exc))
