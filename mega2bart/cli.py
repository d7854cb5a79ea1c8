"""`mega2bart` command line: thin typer commands, one library call each.

    mega2bart build OUTPUT_DIR [--preset tiny|base|large] [--encoder ID|DIR] [--decoder ID|DIR] ...
    mega2bart info MODEL_DIR [--json]
    mega2bart fill-mask "text with <mask>" [--model DIR_OR_ID | --preset tiny] [--top-k 5]

To add a command: write one small function decorated with `@app.command()`, import the library
inside its body, and turn user errors into `_fail(...)` (message on stderr, exit code 2).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer

app = typer.Typer(
    name="mega2bart",
    help="Long-document summarisation: a 16k-token MEGA encoder joined to a BART decoder (transformers 5).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ERROR_EXIT_CODE = 2


_LOG_HANDLER_NAME = "mega2bart-cli"


def _setup_logging(verbose: bool) -> None:
    """Send mega2bart's log records to the current stderr (one handler, replaced on each command)."""
    logger = logging.getLogger("mega2bart")
    for handler in list(logger.handlers):
        if handler.get_name() == _LOG_HANDLER_NAME:
            logger.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.set_name(_LOG_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=ERROR_EXIT_CODE)


@app.command()
def build(
    output_dir: Annotated[Path, typer.Argument(help="Directory to write the model to (must be empty or absent).")],
    preset: Annotated[
        str | None, typer.Option(help="tiny (random, offline), base (bart-base) or large (bart-large; default).")
    ] = None,
    encoder: Annotated[str | None, typer.Option(help="Encoder Hub id (owner/name[@rev]) or directory.")] = None,
    decoder: Annotated[str | None, typer.Option(help="Decoder Hub id or directory (BART family).")] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help='Tokenizer Hub id or directory, or "offline" (default: the decoder\'s).')
    ] = None,
    max_input_length: Annotated[
        int | None, typer.Option(min=1, help="Tokenizer model_max_length (default: the encoder's context, 16384).")
    ] = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=1, help="Generation default (512).")] = None,
    min_new_tokens: Annotated[int | None, typer.Option(min=0, help="Generation default (32).")] = None,
    num_beams: Annotated[int | None, typer.Option(min=1, help="Generation default (4).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT_DIR if it is not empty.")] = False,
    quiet: Annotated[bool, typer.Option(help="Only warnings and errors.")] = False,
) -> None:
    """Build a MEGA encoder + BART decoder EncoderDecoderModel and save it with tokenizer and model card."""
    _setup_logging(not quiet)
    from .builder import BuildError, build_mega2bart, preset_kwargs, save_mega2bart

    output = output_dir.expanduser()
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        _fail(f"output directory {str(output)!r} is not empty: pass --overwrite or choose another path")
    try:
        sources = preset_kwargs(preset or "large")
    except ValueError as exc:
        _fail(str(exc))
    for key, value in (("encoder", encoder), ("decoder", decoder), ("tokenizer", tokenizer)):
        if value is not None:
            sources[key] = value
    if decoder is not None and tokenizer is None and preset is None:
        sources["tokenizer"] = decoder  # the decoder's own tokenizer, as build_mega2bart defaults
    generation = {
        key: value
        for key, value in (("max_new_tokens", max_new_tokens), ("min_new_tokens", min_new_tokens), ("num_beams", num_beams))
        if value is not None
    }
    try:
        model, tok = build_mega2bart(**sources, max_input_length=max_input_length, generation=generation or None)
        path = save_mega2bart(model, tok, output, overwrite=overwrite)
    except (BuildError, ImportError) as exc:
        _fail(str(exc))
    except ValueError as exc:  # e.g. inconsistent generation settings
        _fail(f"{type(exc).__name__}: {exc}")
    counts = model.mega2bart_build_info["parameters"]
    typer.echo(
        f"saved {path} (encoder {counts['encoder']:,}, decoder {counts['decoder']:,}, total {counts['total']:,} "
        f"parameters; {model.mega2bart_build_info['random_init_parameters']:,} random-init)"
    )


@app.command()
def info(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by `mega2bart build` (or training).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full description as JSON.")] = False,
) -> None:
    """Show architecture, parameters per part, random-init weights, context length and generation settings."""
    from .builder import BuildError, describe_mega2bart

    try:
        description = describe_mega2bart(model_dir)
    except BuildError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(description, indent=2, default=str))
        return
    arch = description["architecture"]
    enc, dec = arch["encoder"], arch["decoder"]
    lines = [
        f"model: {description['path']}",
        f"architecture: EncoderDecoderModel = {enc['model_type']} encoder ({enc['layers']} layers, width "
        f"{enc['hidden_size']}, chunk {enc['chunk_size']}) -> {dec['model_type']} decoder ({dec['layers']} layers, "
        f"width {dec['hidden_size']})" + (" via enc_to_dec_proj" if arch["enc_to_dec_proj"] else ""),
    ]
    for part in ("encoder", "decoder", "tokenizer"):
        source = description.get(part)
        if isinstance(source, dict):
            revision = f" @ {source['revision']}" if source.get("revision") else ""
            lines.append(f"{part} source: {source.get('kind')} {source.get('name')}{revision}")
    lines.append("parameters: " + ", ".join(f"{k} {v:,}" for k, v in (description["parameters"] or {}).items()))
    random_init = description.get("random_init")
    if random_init is None:
        lines.append("random-init weights: unknown (no mega2bart_build.json)")
    else:
        lines.append(
            f"random-init weights: {len(random_init)} tensors, {description.get('random_init_parameters', 0):,} parameters"
        )
        whole = [part for part in ("encoder", "decoder") if (description.get(part) or {}).get("kind") == "config"]
        for part in whole:
            entries = [e for e in random_init if e["name"].startswith(part + ".")]
            lines.append(f"  {part}.*: all {len(entries)} tensors, {sum(e['numel'] for e in entries):,} (built from a config)")
        listed = [e for e in random_init if e["name"].split(".", 1)[0] not in whole]
        for entry in listed[:20]:
            lines.append(f"  {entry['name']}: {entry['numel']:,}")
        if len(listed) > 20:
            lines.append(f"  ... {len(listed) - 20} more (see --json)")
    lines.append(f"context length: {description['context_length']}")
    generation = {k: v for k, v in description["generation"].items() if v is not None}
    lines.append("generation: " + ", ".join(f"{k}={v}" for k, v in sorted(generation.items())))
    lines.append(f"remote code shipped: {description['remote_code']}")
    typer.echo("\n".join(lines))


@app.command("fill-mask")
def fill_mask(
    text: Annotated[str, typer.Argument(help='Text with one "<mask>" token.')],
    model: Annotated[
        str | None, typer.Option(help="MEGA MLM Hub id or directory (default: the seed checkpoint).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help='"tiny": a random tiny MegaForMaskedLM with the offline tokenizer (no network).')
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="How many predictions to print.")] = 5,
) -> None:
    """Predict the <mask> token with a MEGA masked-language model (pipeline "fill-mask")."""
    _setup_logging(False)
    import mega2bart  # noqa: F401  (registers MEGA with the Auto classes)
    from transformers import pipeline

    from .presets import DEFAULT_ENCODER

    if preset is not None and model is not None:
        _fail("pass either --model or --preset, not both")
    if preset is not None:
        if preset != "tiny":
            _fail(f"fill-mask knows only --preset tiny (got {preset!r}); for real models pass --model")
        import torch

        from .models.mega import MegaConfig, MegaForMaskedLM
        from .presets import TINY_MLM
        from .tokenization import load_offline_tokenizer

        tokenizer = load_offline_tokenizer()
        torch.manual_seed(0)
        mlm = MegaForMaskedLM(MegaConfig(**TINY_MLM)).eval()
        typer.secho("warning: --preset tiny is a RANDOM untrained model: its predictions are noise", err=True,
                    fg=typer.colors.YELLOW)
        fill = pipeline("fill-mask", model=mlm, tokenizer=tokenizer, top_k=top_k)
    else:
        name = model or DEFAULT_ENCODER
        try:
            fill = pipeline("fill-mask", model=name, top_k=top_k)
        except (OSError, ValueError) as exc:
            _fail(f"could not load fill-mask model {name!r}: {str(exc).splitlines()[0] if str(exc) else exc}")
    mask = fill.tokenizer.mask_token
    if mask not in text:
        _fail(f"the text has no {mask} token: write e.g. \"I love to {mask} memes.\"")
    try:
        predictions = fill(text)
    except Exception as exc:  # noqa: BLE001 - pipeline errors (e.g. two masks) go to the user verbatim
        _fail(f"{type(exc).__name__}: {exc}")
    if predictions and isinstance(predictions[0], list):
        _fail(f"the text has more than one {mask}; use exactly one")
    for prediction in predictions:
        typer.echo(f"{prediction['score']:.4f}\t{prediction['token_str'].strip()!r}\t{prediction['sequence']}")


if __name__ == "__main__":
    app()
