"""`mega2bart` command line: thin typer commands, one library call each.

    mega2bart build OUTPUT_DIR [--preset tiny|base|large] [--encoder ID|DIR] [--decoder ID|DIR] ...
    mega2bart info MODEL_DIR [--json]        (a built model, or a bare MEGA model: adds each layer's EMA reach)
    mega2bart export SOURCE OUTPUT_DIR [--tokenizer ID|DIR] [--push-to-hub OWNER/NAME]   (trust_remote_code folder)
    mega2bart fill-mask "text with <mask>" [--model DIR_OR_ID | --preset tiny] [--top-k 5]
    mega2bart train [--config FILE.yaml] [--model DIR] [--dataset aclsum] [--output-dir DIR] [--max-steps N] ...
    mega2bart eval MODEL_DIR --output-dir DIR [--dataset aclsum] [--split test] [--limit N] [--dtype bf16]
    mega2bart summarize MODEL_DIR FILES... --output OUT.jsonl [--max-input-tokens N] [--skip-existing|--overwrite]
        [--dtype bf16]
    mega2bart plan MODEL_DIR|PRESET [--task train|generate] [--length N] [--device-memory 24GiB] [--json] ...

To add a command: write one small function decorated with `@app.command()`, import the library
inside its body, and turn user errors into `fail(...)` (message on stderr, exit code 2).
The `train` and `pretrain` options are generated from the `TrainConfig` / `PretrainConfig` fields
(`with_run_config`), the generation options of `eval` and `summarize` from the `GenerationOptions`
fields (`with_generation_options`), both through `with_fields_of` (all in `mega2bart.cli_options`, with
`fail`): to add or change one, edit the field (`mega2bart.config_types.setting`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from .cli_logging import setup_logging as _setup_logging
from .cli_options import (
    ERROR_EXIT_CODE,
    at_command_end,
    fail,
    one_line_os_errors,
    os_error_line,
    require_one_of,
    require_writable,
    with_command_end,
    with_generation_options,
    with_ranges,
    with_run_config,
)
from .cli_options import plan_check as _plan_check  # (train/eval/summarize have an option named plan_check)
from .pretraining import PretrainConfig  # the configs define the train/pretrain options (below);
from .summarize import GenerationOptions  # ... and the eval/summarize generation options
from .training import TrainConfig  # importing them adds the Trainer's import time (about 0.5 s) to each command

__all__ = ["ERROR_EXIT_CODE", "app"]

app = typer.Typer(
    name="mega2bart",
    help="Long-document summarisation: a 16k-token MEGA encoder joined to a BART decoder (transformers 5).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _start_up() -> None:
    # every command: glibc hands freed blocks of 16 MiB or more back, so the RSS stays near the live tensors and
    # near what `mega2bart plan` predicts (mega2bart/plan/allocator.py; MEGA2BART_MALLOC_TRIM=0 keeps glibc's defaults)
    from .plan.allocator import keep_rss_near_live

    keep_rss_near_live()


def _one_line(exc: BaseException) -> str:
    """`TypeName: message` on one line (library errors can span many)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _start(quiet: bool, output: Path, what: str, command: str) -> None:
    """The start of a command that writes OUTPUT (build, train, eval, summarize, pretrain): mega2bart's log
    on stderr (`--quiet`: only warnings and errors, and the libraries quiet too), then, before anything
    loads, a one-line failure when OUTPUT cannot be written or another process is writing it: the command
    holds OUTPUT's lock (`mega2bart.output_lock`) until it ends (`with_command_end`)."""
    _setup_logging(not quiet, libraries=quiet)
    require_writable(output, what)
    from .output_lock import OutputInUse, hold_output

    try:
        lock = hold_output(output, what, command)
    except OutputInUse as exc:
        fail(str(exc))
    if lock is not None:
        at_command_end(lock.release)


@contextlib.contextmanager
def _run_errors(output_dir: str) -> Iterator[None]:
    """The errors of a training run (train, pretrain) as one-line failures: bad settings, a missing file or
    package with their own message; the operating system's (a full disk, ...) as `os_error_line`; torch's (out of
    memory), datasets' and transformers' (OSError, RuntimeError) as `TypeName: message`."""
    try:
        yield
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))
    except (OSError, RuntimeError) as exc:
        fail(os_error_line(exc, output_dir) or _one_line(exc))


def _warn(message: str) -> None:
    """A warning on stderr, in yellow; the command goes on."""
    typer.secho(message, err=True, fg=typer.colors.YELLOW)


@app.command()
@with_command_end
@with_ranges
def build(
    output_dir: Annotated[Path, typer.Argument(help="Directory to write the model to (must be empty or absent).")],
    preset: Annotated[
        str | None, typer.Option(help="tiny (random, offline), base (bart-base) or large (bart-large; default).")
    ] = None,
    encoder: Annotated[
        str | None, typer.Option(help="Encoder Hub id (owner/name, optionally @revision) or directory.")
    ] = None,
    decoder: Annotated[
        str | None,
        typer.Option(help="Decoder Hub id or directory (BART family, or MEGA: a config alone = random init)."),
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help='Tokenizer Hub id or directory, or "offline" (default: the decoder\'s).')
    ] = None,
    max_input_length: Annotated[
        int | None, typer.Option(help="Tokenizer model_max_length (default: the encoder's context, 16384).")
    ] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Generation default (512).")] = None,
    min_new_tokens: Annotated[int | None, typer.Option(help="Generation default (32).")] = None,
    num_beams: Annotated[int | None, typer.Option(help="Generation default (4).")] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the random-init weights: the same arguments give the same weights.")
    ] = 0,
    random_init: Annotated[
        bool,
        typer.Option(help="The preset's architecture with RANDOM weights and the offline tokenizer (no network)."),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT_DIR if it is not empty.")] = False,
    quiet: Annotated[bool, typer.Option(help="Only warnings and errors.")] = False,
) -> None:
    """Build a MEGA encoder + BART decoder EncoderDecoderModel and save it with tokenizer and model card."""
    output = output_dir.expanduser()
    _start(quiet, output, "OUTPUT_DIR", "build")
    from .builder import BuildError, build_mega2bart, preset_kwargs, save_mega2bart
    from .config_types import output_overlap

    if output.exists() and not output.is_dir():
        fail(f"output {str(output)!r} is a file, not a directory: pass a directory path (new or empty)")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        fail(f"output directory {str(output)!r} is not empty: pass --overwrite or choose another path")
    if random_init and (encoder is not None or decoder is not None):
        fail("--random-init builds the preset's own architecture: drop --encoder/--decoder, or drop --random-init")
    try:
        sources = preset_kwargs(preset or "large", random_init=random_init)
    except ValueError as exc:
        fail(str(exc))
    if random_init:
        _warn(
            f"warning: --random-init: every weight of this {preset or 'large'} model is RANDOM (real shapes, offline "
            "tokenizer): for benchmarks and smoke tests; its summaries are noise until trained"
        )
    for key, value in (("encoder", encoder), ("decoder", decoder), ("tokenizer", tokenizer)):
        if value is not None:
            sources[key] = value
    if decoder is not None and tokenizer is None and preset is None:
        sources["tokenizer"] = None  # build_mega2bart then takes the decoder's own tokenizer (and says if it has none)
    for key, value in sources.items():  # --overwrite replaces OUTPUT_DIR whole: a source in it would go too
        if overwrite and isinstance(value, str) and output_overlap(output, value) == "holds":
            fail(
                f"--{key} {value!r} is inside OUTPUT_DIR {str(output)!r}, which --overwrite replaces whole (the source "
                "deleted with it); nothing was written: move it out of OUTPUT_DIR first, or pass another OUTPUT_DIR"
            )
    generation = {
        key: value
        for key, value in (
            ("max_new_tokens", max_new_tokens),
            ("min_new_tokens", min_new_tokens),
            ("num_beams", num_beams),
        )
        if value is not None
    }
    try:
        model, tok = build_mega2bart(
            **sources, max_input_length=max_input_length, generation=generation or None, seed=seed
        )
        path = save_mega2bart(model, tok, output, overwrite=overwrite)
    except (BuildError, ImportError) as exc:
        fail(str(exc))
    except ValueError as exc:  # e.g. inconsistent generation settings
        fail(f"{type(exc).__name__}: {exc}")
    info = model.mega2bart_build_info
    counts = info.parameters
    typer.echo(
        f"saved {path} (encoder {counts['encoder']:,}, decoder {counts['decoder']:,}, total {counts['total']:,} "
        f"parameters; {info.random_init_parameters:,} random-init)"
    )


@app.command()
def info(
    model_dir: Annotated[
        Path, typer.Argument(help="A directory written by `mega2bart build` (or training), or a bare MEGA model.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full description as JSON.")] = False,
) -> None:
    """Show architecture, parameters, random-init weights, changes since the build, context, generation settings and each MEGA layer's EMA reach."""
    from .builder import BuildError, describe_model

    try:
        description = describe_model(model_dir)
    except BuildError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(description.to_dict(), indent=2, default=str))  # the warnings are in "reach"
        return
    typer.echo("\n".join(description.summary_lines()))
    for warning in description.warnings:
        _warn(warning)


@app.command()
@with_command_end
def export(
    source: Annotated[str, typer.Argument(help="MEGA Hub id (owner/name[@revision]) or folder, or a mega2bart model.")],
    output_dir: Annotated[Path, typer.Argument(help="Folder to write (must be empty or absent).")],
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer Hub id or folder (default: SOURCE's).")] = None,
    push_to_hub: Annotated[
        str | None, typer.Option(help="Also upload the folder to this Hub repo (owner/name).")
    ] = None,
    private: Annotated[bool, typer.Option(help="Create the --push-to-hub repository private.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT_DIR if it is not empty.")] = False,
    quiet: Annotated[bool, typer.Option(help="Only warnings and errors.")] = False,
) -> None:
    """Write a MEGA model (a mega2bart model: its encoder) as a folder that loads with trust_remote_code alone."""
    _start(quiet, output_dir.expanduser(), "OUTPUT_DIR", "export")
    from .builder import BuildError
    from .export import export_mega

    try:
        path = export_mega(
            source, output_dir, tokenizer=tokenizer, overwrite=overwrite, push_to_hub=push_to_hub, private=private
        )
    except (BuildError, ImportError) as exc:
        fail(str(exc))
    except OSError as exc:  # the Hub upload (network, permissions)
        fail(_one_line(exc))
    typer.echo(f"saved {path}" + (f" and uploaded it to {push_to_hub}" if push_to_hub else ""))


@app.command("fill-mask")
@with_ranges
def fill_mask(
    text: Annotated[str, typer.Argument(help='Text with one "<mask>" token.')],
    model: Annotated[
        str | None, typer.Option(help="MEGA MLM Hub id or directory (default: the seed checkpoint).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help='"tiny": a random tiny MegaForMaskedLM with the offline tokenizer (no network).')
    ] = None,
    top_k: Annotated[int, typer.Option(help="How many predictions to print.")] = 5,
) -> None:
    """Predict the <mask> token with a MEGA masked-language model (pipeline "fill-mask")."""
    _setup_logging(False)
    from transformers import pipeline

    import mega2bart  # noqa: F401  (registers MEGA with the Auto classes)

    from .documents import unicode_problem
    from .presets import DEFAULT_ENCODER

    if preset is not None and model is not None:
        fail("pass either --model or --preset, not both")
    if unicode_problem(text) is not None:
        fail(f"the text holds {unicode_problem(text)}: pass the text as UTF-8")
    if preset is not None:
        if preset != "tiny":
            fail(f"fill-mask knows only --preset tiny (got {preset!r}); for real models pass --model")
        import torch

        from .models.mega import MegaConfig, MegaForMaskedLM
        from .presets import TINY_MLM
        from .tokenization import load_offline_tokenizer

        tokenizer = load_offline_tokenizer()
        torch.manual_seed(0)
        mlm = MegaForMaskedLM(MegaConfig(**TINY_MLM)).eval()
        _warn("warning: --preset tiny is a RANDOM untrained model: its predictions are noise")
        fill = pipeline("fill-mask", model=mlm, tokenizer=tokenizer, top_k=top_k)
    else:
        name = model or DEFAULT_ENCODER
        from .builder.checks import check_rows_hold_tokenizer, vocabulary_rows
        from .builder.integrity import check_model_files

        try:
            check_model_files(name, "fill-mask model")
            fill = pipeline("fill-mask", model=name, top_k=top_k)
            resized = "its embeddings were resized below its tokenizer: resize them to the tokenizer's size and save"
            check_rows_hold_tokenizer(fill.tokenizer, vocabulary_rows({"model": fill.model}), "the model", resized)
        except (OSError, ValueError) as exc:
            fail(f"could not load fill-mask model {name!r}: {str(exc).splitlines()[0] if str(exc) else exc}")
    mask = fill.tokenizer.mask_token
    if mask not in text:
        fail(f'the text has no {mask} token: write e.g. "I love to {mask} memes."')
    try:
        predictions = fill(text)
    except Exception as exc:  # noqa: BLE001 - pipeline errors (e.g. two masks) go to the user verbatim
        fail(f"{type(exc).__name__}: {exc}")
    if predictions and isinstance(predictions[0], list):
        fail(f"the text has more than one {mask}; use exactly one")
    for prediction in predictions:
        typer.echo(f"{prediction['score']:.4f}\t{prediction['token_str'].strip()!r}\t{prediction['sequence']}")


# ----------------------------------------------------------------------------- train / eval / summarize


@app.command()
@with_command_end
@with_run_config(TrainConfig, missing="pass --model MODEL_DIR (from `mega2bart build`) or --config FILE.yaml")
def train(
    train_config: TrainConfig,
    overwrite: Annotated[
        bool, typer.Option(help="Delete the previous run's checkpoints, config and weights in --output-dir first.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="Only warnings and errors.")] = False,
    plan_check: Annotated[
        bool, typer.Option(help="On CUDA, stop at once when `mega2bart plan` says it does not fit.")
    ] = True,
) -> None:
    """Fine-tune a mega2bart model (Seq2SeqTrainer, ROUGE on the eval split); resumable; DDP under torchrun."""
    _start(quiet, Path(train_config.output_dir), "--output-dir", "train")
    from .training import METRICS_FILE, rung_lines
    from .training import train as run_training

    _plan_check(plan_check, "preflight_train", train_config)
    with _run_errors(train_config.output_dir):
        results = run_training(train_config, overwrite=overwrite, quiet=quiet)
    if os.environ.get("RANK", "0") != "0":  # under torchrun/accelerate only the main process reports
        return
    losses = [entry["loss"] for entry in results["log_history"] if "loss" in entry]
    line = rung_lines(results.get("curriculum", [])) + f"trained to step {results['run']['global_step']}"
    if losses:
        line += f"; logged loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    evaluation = results.get("eval") or {}
    if "eval_rouge1" in evaluation:
        line += "; eval ROUGE-1/2/L/Lsum " + "/".join(
            f"{evaluation[f'eval_{name}']:.2f}" for name in ("rouge1", "rouge2", "rougeL", "rougeLsum")
        )
    typer.echo(f"{line}\nmodel, checkpoints and {METRICS_FILE} in {train_config.output_dir}")


# the options eval and summarize share, declared once
_ContextOption = Annotated[int | None, typer.Option(help="Context (default: tokenizer model_max_length).")]
_DtypeOption = Annotated[str, typer.Option(help="Inference precision: fp32 | bf16 | fp16 (fp16 needs a CUDA GPU).")]
_QuietInferenceOption = Annotated[bool, typer.Option(help="Only warnings and errors; no progress bar.")]
_PlanCheckOption = Annotated[
    bool, typer.Option(help="On CUDA, stop before loading data when `mega2bart plan` says the run does not fit.")
]


@app.command("eval")
@with_command_end
@with_ranges
@with_generation_options
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model directory (`mega2bart build` or `mega2bart train` output).")],
    output_dir: Annotated[Path, typer.Option(help="Where eval_results.json and predictions.jsonl go.")],
    dataset: Annotated[str, typer.Option(help='"aclsum" (offline), a data file or a Hub name.')] = "aclsum",
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N examples.")] = None,
    max_input_tokens: _ContextOption = None,
    overflow: Annotated[str, typer.Option(help="Longer documents: truncate (as in training) | windows.")] = "truncate",
    batch_size: Annotated[int, typer.Option(help="Inputs per generate call.")] = 4,
    generation: GenerationOptions = GenerationOptions(),  # noqa: B008  (replaced by its fields: with_generation_options)
    bootstrap_samples: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    dtype: _DtypeOption = "fp32",
    quiet: _QuietInferenceOption = False,
    plan_check: _PlanCheckOption = True,
) -> None:
    """Generate summaries for a dataset split; write ROUGE-1/2/L/Lsum with bootstrap CIs and predictions; shared under torchrun."""
    require_one_of("--overflow", overflow, ("truncate", "windows"))
    _start(quiet, output_dir, "--output-dir", "eval")
    from .evaluation import evaluate_model

    _plan_check(plan_check, "preflight_generate", model, max_input_tokens, batch_size, generation, dtype)
    try:
        report = evaluate_model(
            model,
            dataset,
            output_dir,
            split=split,
            limit=limit,
            max_input_tokens=max_input_tokens,
            overflow=overflow,
            batch_size=batch_size,
            generation=generation,
            bootstrap_samples=bootstrap_samples,
            seed=seed,
            progress=not quiet,
            dtype=dtype,
        )
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        fail(str(exc))
    if report is None:  # under torchrun/accelerate only the main process scores and reports
        return
    rouge = report["rouge"]
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        entry = rouge[name]
        interval = f" [{entry['ci_low']:.2f}, {entry['ci_high']:.2f}]" if "ci_low" in entry else ""
        typer.echo(f"{name:10s} {entry['mean']:6.2f}{interval}")
    words = report["generated_length"]["words"]
    speed = report["throughput"]
    typer.echo(
        f"{report['num_examples']} examples, sentence splitter {report['sentence_splitter']}, generated words "
        f"mean {words.get('mean', 0)}; {speed['documents_per_hour']} documents/hour ({speed['dtype']} on "
        f"{speed['device']}); wrote {output_dir / 'eval_results.json'} and {output_dir / 'predictions.jsonl'}"
    )


@app.command()
@with_command_end
@with_ranges
@with_generation_options
def summarize(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    files: Annotated[list[str], typer.Argument(help='.txt/.md/.html/.jsonl/.pdf files, or "-" for stdin.')],
    output: Annotated[
        Path,
        typer.Option(
            help="Output jsonl: one record per document, with window provenance (run statistics: OUT.stats.json)."
        ),
    ],
    max_input_tokens: _ContextOption = None,
    window_overlap: Annotated[int | None, typer.Option(help="Tokens shared by neighbouring windows.")] = None,
    merge: Annotated[str, typer.Option(help="summarize (summary of window summaries) | concatenate.")] = "summarize",
    max_levels: Annotated[int, typer.Option(help="Most merge levels before truncating.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Inputs per generate call (grouped by length).")] = 4,
    generation: GenerationOptions = GenerationOptions(),  # noqa: B008  (replaced by its fields: with_generation_options)
    skip_existing: Annotated[bool, typer.Option(help="Resume: keep records already in --output, do the rest.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier summaries file at --output.")] = False,
    dtype: _DtypeOption = "fp32",
    quiet: _QuietInferenceOption = False,
    plan_check: _PlanCheckOption = True,
) -> None:
    """Summarise documents of any length (overlapping windows, then a summary of summaries); shared under torchrun."""
    require_one_of("--merge", merge, ("summarize", "concatenate"))
    _start(quiet, output, "--output", "summarize")
    from .builder import BuildError
    from .summarize import Summarizer, check_output, stats_path, summarize_files

    try:
        check_output(output, files, skip_existing=skip_existing, overwrite=overwrite)  # before the model loads
    except (ValueError, FileExistsError) as exc:
        fail(str(exc))
    _plan_check(plan_check, "preflight_generate", model, max_input_tokens, batch_size, generation, dtype)
    try:
        summarizer = Summarizer.load(
            model,
            dtype,
            max_input_tokens=max_input_tokens,
            window_overlap=window_overlap,
            batch_size=batch_size,
            generation=generation,
            merge=merge,
            max_levels=max_levels,
        )
        counts = summarize_files(
            summarizer, files, output, skip_existing=skip_existing, overwrite=overwrite, progress=not quiet
        )
    except (BuildError, ValueError, FileNotFoundError, FileExistsError, ImportError) as exc:
        fail(str(exc))
    if os.environ.get("RANK", "0") != "0":  # under torchrun/accelerate only the main process reports
        return
    refused = f", {counts['refused']} refused (see the warnings above)" if counts["refused"] else ""
    typer.echo(
        f"{counts['written']} summarised ({counts['windowed']} through windows), {counts['skipped']} already done"
        f"{refused}; {counts['documents_per_hour']} documents/hour ({dtype}); wrote {output}"
        + (f" and {stats_path(output)}" if output.is_file() else ""),
        err=not output.is_file(),  # `--output /dev/stdout`: keep the jsonl stream clean
    )


@app.command()
@with_command_end
@with_run_config(
    PretrainConfig, missing='pass --encoder (a MEGA checkpoint directory, a Hub id or "tiny") or --config FILE.yaml'
)
def pretrain(
    pretrain_config: PretrainConfig,
    quiet: Annotated[bool, typer.Option(help="Only warnings and errors.")] = False,
) -> None:
    """Continue MLM pretraining of a MEGA encoder on raw text; the result feeds `mega2bart build --encoder`."""
    _start(quiet, Path(pretrain_config.output_dir), "--output-dir", "pretrain")
    from .pretraining import METRICS_FILE, run_pretraining

    with _run_errors(pretrain_config.output_dir):
        final = run_pretraining(pretrain_config)
    phases_run = json.loads((final.parent / METRICS_FILE).read_text())["phases"]
    for phase in phases_run:
        typer.echo(
            f"phase {phase['phase']}: length {phase['max_length']}, mask {phase['mask_ratio']}, {phase['steps']} steps, "
            f"probe MLM loss {phase['mlm_loss_before']:.3f} -> {phase['mlm_loss_after']:.3f}"
        )
    typer.echo(f"saved {final} (use it with `mega2bart build --encoder {final}`)")


@app.command()
@with_ranges
def plan(
    model: Annotated[str, typer.Argument(help="A preset (tiny, base, large) or a model directory (config.json).")],
    task: Annotated[str, typer.Option(help="train | generate.")] = "generate",
    length: Annotated[int, typer.Option(help="Encoder input tokens.")] = 16384,
    batch: Annotated[int, typer.Option(help="Inputs per step / generate call.")] = 1,
    beams: Annotated[int, typer.Option(help="Beams (generate).")] = 4,
    new_tokens: Annotated[int, typer.Option(help="Tokens generated (generate).")] = 256,
    label_tokens: Annotated[int, typer.Option(help="Summary tokens per example (train).")] = 512,
    dtype: Annotated[str, typer.Option(help="fp32 | bf16 | fp16 (train: mixed precision).")] = "fp32",
    gradient_checkpointing: Annotated[bool, typer.Option(help="Per-block checkpointing (train).")] = False,
    optimizer: Annotated[str, typer.Option(help="adamw | adafactor | sgd (train).")] = "adamw",
    freeze: Annotated[str, typer.Option(help="none | encoder: train with the MEGA encoder frozen (train).")] = "none",
    device: Annotated[
        str, typer.Option(help="cpu | cuda: the overhead calibration and the measured matmul rate.")
    ] = "cpu",
    device_memory: Annotated[
        str | None,
        typer.Option(help="e.g. 24GiB: say whether the run fits and the largest length/batch/beams that do."),
    ] = None,
    tflops: Annotated[
        float | None,
        typer.Option(
            help="Matmul TFLOP/s to assume instead of measuring it (the model's efficiency and the optimiser's cost are then assumed too)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON (peak_bytes, seconds, ...).")] = False,
) -> None:
    """Predict the whole process's peak memory (with its breakdown) and the time of a run, from the configuration."""
    from .plan import PlanError, Workload, format_report, plan_report

    try:
        workload = Workload(
            task=task,  # type: ignore[arg-type]
            length=length,
            batch=batch,
            beams=beams,
            new_tokens=new_tokens,
            label_tokens=label_tokens,
            dtype=dtype,  # type: ignore[arg-type]
            gradient_checkpointing=gradient_checkpointing,
            optimizer=optimizer,  # type: ignore[arg-type]
            device=device,  # type: ignore[arg-type]
            freeze=freeze,  # type: ignore[arg-type]
        )
        report = plan_report(model, workload, device_memory=device_memory, tflops=tflops)
    except PlanError as exc:
        fail(str(exc))
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))


@app.command()
def demo(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    host: Annotated[
        str, typer.Option(help="Address to serve on; 0.0.0.0 opens the page to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 7860,
    max_input_tokens: _ContextOption = None,
    window_overlap: Annotated[int | None, typer.Option(min=0, help="Tokens shared by neighbouring windows.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Windows per generate call.")] = 4,
    max_queue: Annotated[int, typer.Option(min=1, help="Most requests waiting for the model; more are refused.")] = 64,
    dtype: _DtypeOption = "fp32",
) -> None:
    """Serve a web page that summarises a pasted text or a dropped file (needs the optional "demo" extra)."""
    _setup_logging(True)
    from .builder import BuildError
    from .demo import require_gradio

    try:
        require_gradio()  # before the model loads
        from .demo.app import serve
        from .demo.runner import DemoModel

        page = DemoModel(
            model, dtype=dtype, max_input_tokens=max_input_tokens, window_overlap=window_overlap, batch_size=batch_size
        )
        serve(page, host=host, port=port, max_queue=max_queue)
    except (ImportError, BuildError, ValueError, OSError) as exc:
        fail(str(exc))


# every command: an operating-system error (full disk, read-only file system, symlink loop, ...) is one line naming
# the path, whichever step of the command met it
for _command in app.registered_commands:
    _command.callback = one_line_os_errors(_command.callback, ("output", "output_dir"))

if __name__ == "__main__":
    app()
