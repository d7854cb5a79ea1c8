"""The probe's recipe: its model (configs and build), its settings (`FULL`, `QUICK`, the curriculum's rungs) and the
arguments of every `mega2bart train` and `mega2bart eval` step. A trial of the recipe changes this file."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTROL_CONTEXT = 1024
EMA_INITS = ("port", "long")  # MegaConfig.ema_init: the 4.x port's init, or reaches spread up to the input length


def model_configs(length: int, ema_init: str = "long") -> tuple[dict[str, Any], dict[str, Any]]:
    """The probe's encoder and decoder configs: the tiny preset's options at a width that trains on 2 cores,
    with the seed's chunk size (1,024) and EMA kind (bidirectional, multi-dimensional damped), and the product's
    EMA init (`MegaConfig.ema_init`; "long": reaches log-spaced from 4 to `length` tokens, what `mega2bart build`
    gives a random-init MEGA).

    Chosen by trials (benchmarks/README.md, "Trials"). The earlier probe model (post-norm, 64 wide, BART's
    init_std 0.02) stayed at the copy-free loss for 600 steps on 128-token inputs. On one fact in 24 filler
    tokens, 64-wide models (post- or pre-norm, decoder init_std 0.02 or 0.08, AdamW 3e-3) copied under 20% of
    the names after 320-800 steps; pre-norm at width 128 with init_std 0.05 and AdamW 2e-3 copied all of them
    after 550 (the trials changed width and init together, so which of the two mattered is not known).
    """
    from mega2bart.presets import TINY_DECODER, TINY_ENCODER

    encoder = {
        **TINY_ENCODER,
        "hidden_size": 128,
        "intermediate_size": 128,  # E, the value width of the gated attention
        "nffn_hidden_size": 256,
        "shared_representation_size": 32,  # Z, queries and keys
        "ema_projection_size": 16,  # N, EMA dimensions per channel
        "num_hidden_layers": 2,
        "chunk_size": 1024,
        "normalize_before_mega": True,
        "normalize_before_ffn": True,
        "max_positions": max(length, 16384),
        "ema_init": ema_init,
        "ema_max_reach": length,
    }
    decoder = {
        **TINY_DECODER,
        "d_model": 128,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 256,
        "decoder_ffn_dim": 256,
        "max_position_embeddings": 256,
        "init_std": 0.05,
    }
    return encoder, decoder


# The LED arm's window in stages 1 and 2, whose inputs are at most 128 tokens: with 128 tokens on either side every
# token sees every other, as it does with the window of 1,024, while Longformer pads each input to a multiple of
# 256 tokens instead of 1,024 (a stage-1 step measured 10-13x cheaper). The weights do not depend on the window:
# `widen` sets the window of 1,024 before the long inputs.
SHORT_WINDOW = 256


def led_encoder_config(length: int, window: int = CONTROL_CONTEXT) -> dict[str, Any]:
    """The LED-shaped control's encoder: LED's encoder attention (Longformer: a sliding window of 1,024 tokens,
    or `window`, learned absolute positions up to `length`), as wide and deep as the probe's MEGA, random init."""
    mega, _ = model_configs(length)
    return {
        "model_type": "longformer",
        "vocab_size": mega["vocab_size"],
        "hidden_size": mega["hidden_size"],
        "num_hidden_layers": mega["num_hidden_layers"],
        "num_attention_heads": 4,
        "intermediate_size": mega["nffn_hidden_size"],
        "attention_window": window,
        "max_position_embeddings": length + 2,  # RoBERTa-style positions start after the padding index
        "type_vocab_size": 1,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }


def build_model(
    directory: Path,
    length: int,
    max_new_tokens: int,
    ema_init: str = "long",
    encoder: str = "mega",
    seed: int = 0,
    window: int = CONTROL_CONTEXT,
) -> dict[str, Any]:
    """Build and save the random-init probe model with `mega2bart.builder` (`ema_init`: `MegaConfig.ema_init`;
    `encoder="longformer"`: the LED-shaped control, `led_encoder_config`); returns its parameter counts."""
    from mega2bart.builder import build_mega2bart, parameter_counts, save_mega2bart

    if ema_init not in EMA_INITS:
        raise ValueError(f"ema_init must be one of {EMA_INITS}, not {ema_init!r}")
    mega, decoder = model_configs(length, ema_init)
    model, tokenizer = build_mega2bart(
        led_encoder_config(length, window) if encoder == "longformer" else mega,
        decoder,
        "offline",
        max_input_length=length,
        seed=seed,  # the random init; a build is reproducible
        generation={
            "max_new_tokens": max_new_tokens,
            "min_new_tokens": 0,
            "num_beams": 1,
            "no_repeat_ngram_size": 0,
            "length_penalty": 1.0,
            "early_stopping": False,
        },
    )
    save_mega2bart(model, tokenizer, directory, overwrite=True)
    return parameter_counts(model)


@dataclass
class Settings:
    length: int  # stage 3 and held-out inputs
    control_context: int
    stage1_filler: int  # stage 1: one fact in this many filler tokens
    stage1_examples: int
    stage1_steps: int  # at most: a stage ends once its loss is below its stop loss (`mega2bart train`'s stop_at_loss)
    stage1_batch: int
    stage1_stop_loss: float | None
    stage2_length: int  # stage 2: 1-5 facts, random buckets
    stage2_examples: int
    stage2_steps: int
    stage2_batch: int
    stage2_stop_loss: float | None
    stage3_examples: int  # stage 3: full length, 5 facts; one run per arm
    stage3_steps: int  # at most, where stage3_stop_loss is set
    stage3_batch: int
    stage3_stop_loss: float | None
    # the full-length arm's way up to stage 3: rungs (length, distinct inputs, at most steps, batch, stop loss),
    # each continuing from the one before (the first from stage 2) on 5-fact inputs of its length; () for none
    curriculum: tuple[tuple[int, int, int, int, float | None], ...]
    test_examples: int
    beyond_examples: int  # held-out inputs of twice `length` (0: none), read by the stage-3 model of full length
    lone_examples: int  # held-out inputs per bucket with one fact only (0: none), read by the same model
    learning_rate: float  # stages 1 and 2, constant after warm-up
    stage3_learning_rate: float  # cosine
    eval_batch: int


FULL = Settings(
    length=16384,
    control_context=CONTROL_CONTEXT,
    stage1_filler=24,
    stage1_examples=20000,
    stage1_steps=3000,
    stage1_batch=32,
    stage1_stop_loss=0.05,
    stage2_length=128,
    stage2_examples=8000,
    stage2_steps=1500,
    stage2_batch=8,
    stage2_stop_loss=0.05,
    stage3_examples=400,
    stage3_steps=400,
    stage3_batch=1,
    # stage 3 runs its whole cosine schedule: ending it at a loss of 0.01 stopped it with the rate still 4-8% of
    # its peak, which left seed 2 one fact short at 4-8k (trials C and F, benchmarks/README.md)
    stage3_stop_loss=None,
    # more distinct 4k and 8k inputs than recipe B's 600 and 300, which its rungs repeated up to their caps (trial C)
    curriculum=((2048, 2000, 500, 4, 0.05), (4096, 1200, 600, 2, 0.04), (8192, 1000, 1000, 1, 0.03)),
    test_examples=40,
    beyond_examples=20,
    lone_examples=8,
    learning_rate=2e-3,
    stage3_learning_rate=1e-3,
    eval_batch=4,
)
QUICK = Settings(
    length=1024,
    control_context=64,
    stage1_filler=24,
    stage1_examples=64,
    stage1_steps=4,
    stage1_batch=8,
    stage1_stop_loss=None,
    stage2_length=128,
    stage2_examples=32,
    stage2_steps=4,
    stage2_batch=8,
    stage2_stop_loss=None,
    stage3_examples=8,
    stage3_steps=2,
    stage3_batch=4,
    stage3_stop_loss=None,
    curriculum=((512, 8, 2, 4, None),),
    test_examples=4,
    beyond_examples=2,
    lone_examples=1,
    learning_rate=2e-3,
    stage3_learning_rate=1e-3,
    eval_batch=4,
)


def parse_curriculum(text: str) -> tuple[tuple[int, int, int, int, float | None], ...]:
    """`--curriculum`: 'none', or rungs LENGTH:INPUTS:STEPS:BATCH:STOP_LOSS separated by commas."""
    if text.strip().lower() == "none":
        return ()
    rungs = []
    for part in text.split(","):
        fields = part.strip().split(":")
        try:
            if len(fields) != 5:
                raise ValueError
            length, count, steps, batch = (int(f) for f in fields[:4])
            stop = float(fields[4])
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"rung {part!r}: give LENGTH:INPUTS:STEPS:BATCH:STOP_LOSS, e.g. 2048:2000:500:4:0.05"
            ) from None
        if min(length, count, steps, batch) < 1 or not 0 <= stop < float("inf"):
            raise argparse.ArgumentTypeError(f"rung {part!r}: counts must be >= 1 and the stop loss finite, >= 0")
        rungs.append((length, count, steps, batch, stop or None))
    return tuple(rungs)


def format_curriculum(rungs: tuple[tuple[int, int, int, int, float | None], ...]) -> str:
    return ",".join(":".join(str(v if v is not None else 0) for v in rung) for rung in rungs) or "none"


def launch_args(cli_args: list[str], resume: bool) -> list[str]:
    """The arguments a step is launched with: as keyed, except that training checkpoints every 100 steps and,
    with `resume`, goes on from its newest checkpoint instead of starting over."""
    launch = list(cli_args)
    if launch[0] == "train":
        save = launch.index("--save-steps") + 1
        launch[save] = str(min(int(launch[save]), 100))
        if resume:
            i = launch.index("--overwrite")
            launch[i : i + 3] = ["--resume", "auto"]
    return launch


def train_args(
    model: Path, data: Path, output: Path, s: Settings, *, stage: int, context: int, seed: int, rung: int | None = None
) -> list[str]:
    """`mega2bart train` arguments of stage 1, 2 or 3, or (with `rung`) of that rung of the curriculum, which
    trains at stage 3's rate, kept constant (stage 3 anneals)."""
    if rung is not None:
        _, _, steps, batch, stop = s.curriculum[rung]
        lr = s.stage3_learning_rate
    else:
        steps, batch, lr, stop = {
            1: (s.stage1_steps, s.stage1_batch, s.learning_rate, s.stage1_stop_loss),
            2: (s.stage2_steps, s.stage2_batch, s.learning_rate, s.stage2_stop_loss),
            3: (s.stage3_steps, s.stage3_batch, s.stage3_learning_rate, s.stage3_stop_loss),
        }[stage]
    return [
        "train",
        "--model",
        str(model),
        "--dataset",
        str(data),
        "--output-dir",
        str(output),
        "--max-steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--gradient-accumulation-steps",
        "1",
        "--learning-rate",
        str(lr),
        "--max-source-length",
        str(context),
        "--max-target-length",
        "96",
        "--eval-split",
        "none",
        "--save-steps",
        str(steps),  # launched with a checkpoint every 100 steps, for resuming (bench_long_context.main's `command`)
        "--no-gradient-checkpointing",
        "--seed",
        str(seed),
        "--overwrite",  # these three become "--resume auto" when an interrupted run of the same step is resumed
        "--resume",
        "none",  # not --quiet: the log shows progress and losses
        # stages 1 and 2 and the rungs keep their peak rate (the copy is learned late, after a plateau); stage 3
        # anneals
        "--set",
        f"warmup_steps={max(1, min(20, steps // 10))}",
        "--set",
        f"lr_scheduler_type={'cosine' if stage == 3 and rung is None else 'constant_with_warmup'}",
        "--set",
        "weight_decay=0.0",
        "--set",
        f"logging_steps={max(1, min(10, steps // 4))}",
        "--set",
        "save_total_limit=1",
        "--set",
        "train_sampling_strategy=random",
        # short stage-1 inputs stay short: MEGA pads only inputs longer than its chunk
        "--set",
        "pad_to_multiple_of=8",
        # each stage and rung ends when its task is learned: the phase change after the plateau comes at a step
        # that varies with the seed and the CPU (benchmarks/README.md), so a fixed count ends too early or wastes time
        *(["--set", f"stop_at_loss={stop}"] if stop is not None else []),
    ]


def eval_args(model: Path, data: Path, output: Path, s: Settings, *, context: int) -> list[str]:
    return [
        "eval",
        str(model),
        "--output-dir",
        str(output),
        "--dataset",
        str(data),
        "--split",
        "train",
        "--max-input-tokens",
        str(context),
        "--batch-size",
        str(s.eval_batch),
        "--num-beams",
        "1",
        "--max-new-tokens",
        "80",
        "--min-new-tokens",
        "0",
        "--bootstrap-samples",
        "0",
        "--quiet",
    ]


def widen(source: Path, target: Path, window: int = CONTROL_CONTEXT) -> None:
    """Copy the LED-shaped model at `source` (its weights, tokenizer and configs; no checkpoints) to `target` with
    its encoder's attention window set to `window` on every layer."""
    import json
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoint-*"))
    path = target / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    encoder = config["encoder"]
    if encoder.get("model_type") != "longformer":
        raise ValueError(f"{source} holds a {encoder.get('model_type')!r} encoder, not the LED-shaped control")
    encoder["attention_window"] = [window] * encoder["num_hidden_layers"]
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
