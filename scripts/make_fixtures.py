"""Write the MEGA parity fixtures from the transformers 4.57.1 port (the numerical oracle).

It runs only under transformers 4.57.1, in the reference environment that `scripts/reference_env.sh`
creates (started with another python, it re-runs itself there, or says how to create it):

    "$(bash scripts/reference_env.sh)" scripts/make_fixtures.py [--out tests/fixtures/mega] [--only CASE ...]

Every case is a folder under tests/fixtures/mega/<case>/ holding
- config.json / model.safetensors : exactly what 4.57.1 `save_pretrained` writes (tied head
  weights left out), absent for the seed-like case, whose weights are regenerated from
  `tests/mega_fixture_weights.py` instead;
- config_full.json : `config.to_dict()` of 4.57.1;
- io.safetensors : inputs and reference outputs, keys "<input set>.<tensor>";
- meta.json : the model class, the input sets, which outputs exist, tolerances and notes.
`manifest.json` lists the cases, the versions, the command and a sha256 per file.

All models are float32, CPU, eval mode, every dropout 0. Tiny weights: manual_seed(0) build,
then manual_seed(1) and add 0.05 * randn_like to every parameter in named_parameters() order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REQUIRED_TRANSFORMERS = "4.57.1"
REFERENCE_COMMAND = '"$(bash scripts/reference_env.sh)" scripts/make_fixtures.py'
"""How manifest.json records the command (repository-relative, no machine paths)."""


def reference_python() -> Path:
    """The reference environment's python, where scripts/reference_env.sh creates it (same rule)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = Path(os.environ.get("MEGA2BART_REFERENCE_VENV") or cache / "mega2bart" / "venv-transformers-4.57.1")
    return venv / "bin" / "python"


def run_in_reference_env(found: str) -> None:
    """Re-run this script under the reference environment's python, or exit saying how to create it."""
    python = reference_python()
    # compare environments, not interpreters: a venv's python is a link to the same base interpreter
    inside = Path(sys.prefix).resolve() == python.parent.parent.resolve()
    if python.is_file() and not inside:
        os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])
    problem = f"the reference environment {python} has it" if inside else f"no reference environment at {python}"
    sys.exit(
        f"{Path(__file__).name} needs transformers==4.57.1 (the reference MEGA port), found {found}; "
        f"{problem}: create it with `bash scripts/reference_env.sh` (or set MEGA2BART_REFERENCE_VENV to an existing one)"
    )


import transformers  # noqa: E402

if transformers.__version__ != REQUIRED_TRANSFORMERS:
    run_in_reference_env(f"{transformers.__version__} at {transformers.__file__}")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers.models.deprecated.mega import modeling_mega as mm  # noqa: E402
from transformers.models.deprecated.mega.configuration_mega import MegaConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from mega_fixture_weights import seeded_state_dict, state_dict_checksum  # noqa: E402

logger = logging.getLogger("make_fixtures")

SPEC_TINY_CHECKSUM = 30.97283520298612
SPEC_TINY_FIGURES = {
    "last_hidden_sum_row0": -104.30134582519531,
    "last_hidden_sum_row1_real": -46.813716888427734,
    "logits_sum_row0": 89.08954620361328,
}

# docs/mega.md#fixtures, "Tiny fixture": H=32, E=F=96, Z=8, N=4, C=16, max_positions=64, 2 layers, vocab 128,
# otherwise as the seed configuration (docs/mega.md#seed-configuration), all dropouts 0.
TINY_BASE: dict[str, Any] = dict(
    vocab_size=128,
    hidden_size=32,
    num_hidden_layers=2,
    intermediate_size=96,
    nffn_hidden_size=96,
    ema_projection_size=4,
    shared_representation_size=8,
    bidirectional=True,
    use_chunking=True,
    chunk_size=16,
    truncation=None,
    max_positions=64,
    relative_positional_bias="simple",
    normalization_type="scalenorm",
    norm_affine=True,
    normalize_before_mega=False,
    normalize_before_ffn=False,
    activation="silu",
    attention_activation="softmax",
    add_token_type_embeddings=True,
    type_vocab_size=2,
    add_lm_hidden_dense_layer=False,
    use_normalized_ffn=True,
    use_feature_dropout=False,
    dropout_prob=0.0,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    nffn_activation_dropout_prob=0.0,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)

# docs/mega.md#seed-configuration: the reconstruction of BEE-spoke-data/mega-encoder-small-16k-v1, but 2 layers
SEED_2L: dict[str, Any] = dict(
    vocab_size=50304,
    hidden_size=768,
    num_hidden_layers=2,
    intermediate_size=2304,
    nffn_hidden_size=2304,
    ema_projection_size=32,
    shared_representation_size=192,
    bidirectional=True,
    use_chunking=True,
    chunk_size=1024,
    truncation=None,
    max_positions=16384,
    relative_positional_bias="simple",
    normalization_type="scalenorm",
    norm_affine=True,
    normalize_before_mega=False,
    normalize_before_ffn=False,
    activation="silu",
    attention_activation="softmax",
    add_token_type_embeddings=True,
    type_vocab_size=2,
    add_lm_hidden_dense_layer=False,
    use_normalized_ffn=True,
    use_feature_dropout=False,
    dropout_prob=0.0,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    nffn_activation_dropout_prob=0.0,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    architectures=["MegaForMaskedLM"],
)

# ----------------------------------------------------------------------------------------------
# inputs


def _ids(batch_offsets: list[int], length: int, vocab_mod: int) -> torch.Tensor:
    """ids[b, t] = (7919 t + offset_b) mod vocab_mod + 3   (docs/mega.md#fixtures)."""
    t = torch.arange(length, dtype=torch.int64)
    return torch.stack([(7919 * t + off) % vocab_mod + 3 for off in batch_offsets])  # (B, L)


def tiny_inputs(name: str, vocab_mod: int = 120) -> dict[str, torch.Tensor]:
    """Named tiny input sets. Masks are int64, 1 = keep."""
    if name in ("padded48", "padded48_tt"):
        ids = _ids([0, 17], 48, vocab_mod)  # (2, 48)
        mask = torch.ones_like(ids)
        mask[1, 30:] = 0  # row 1: chunk 2 (positions 32..47) is all padding
        ids[1, 30:] = 1
        out = {"input_ids": ids, "attention_mask": mask}
        if name == "padded48_tt":
            tt = torch.zeros_like(ids)
            tt[0, 24:] = 1
            tt[1, ::3] = 1
            tt[1, 30:] = 0
            out["token_type_ids"] = tt
        return out
    if name == "short10":  # L < chunk, no padding, no mask
        return {"input_ids": _ids([5, 23], 10, vocab_mod)}
    if name == "full16":  # L == chunk, batch 1, explicit all-ones mask
        ids = _ids([11], 16, vocab_mod)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    raise ValueError(f"unknown tiny input set {name!r}")


def mlm_labels(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Labels = input ids at every 3rd real position, -100 elsewhere (pads included)."""
    ids = inputs["input_ids"]
    labels = torch.full_like(ids, -100)
    keep = torch.zeros_like(ids, dtype=torch.bool)
    keep[:, ::3] = True
    if "attention_mask" in inputs:
        keep &= inputs["attention_mask"].bool()
    labels[keep] = ids[keep]
    return labels


# ----------------------------------------------------------------------------------------------
# model construction


def reset_ema_caches(model: torch.nn.Module) -> None:
    """Drop the port's eval-mode EMA kernel/coefficient caches (docs/mega.md#port-quirks)."""
    for module in model.modules():
        if isinstance(module, mm.MegaMultiDimensionDampedEma):
            module._kernel = None
            module._coeffs = None


def build_tiny(cls: type, config: MegaConfig, **kwargs: Any) -> torch.nn.Module:
    """manual_seed(0) build; manual_seed(1) and + 0.05 randn_like on every parameter."""
    torch.manual_seed(0)
    model = cls(config, **kwargs)
    torch.manual_seed(1)
    with torch.no_grad():
        for _, param in model.named_parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def warm_batchnorm(model: torch.nn.Module, config: MegaConfig) -> None:
    """Give BatchNorm layers non-trivial running stats with 3 train-mode forwards (dropouts are 0)."""
    torch.manual_seed(2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            ids = torch.randint(3, config.vocab_size, (2, 32))
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    model.eval()
    reset_ema_caches(model)


# ----------------------------------------------------------------------------------------------
# case definitions


@dataclass
class TinyCase:
    name: str
    model_class: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ("padded48", "short10")
    add_pooling_layer: bool | None = None  # MegaModel only
    attentions: bool = True


TINY_CASES: list[TinyCase] = [
    TinyCase(
        "mlm_spec_tiny",
        "MegaForMaskedLM",
        "docs/mega.md#fixtures tiny fixture exactly: post-norm scalenorm, simple bias, softmax, bidirectional, "
        "chunk 16, token types (implicit zeros), no LM dense",
        {},
        ("padded48", "short10", "full16"),
    ),
    TinyCase(
        "model_rotary_layernorm_prenorm_tt",
        "MegaModel",
        "MegaModel with pooler; rotary bias, layernorm, pre-norm MEGA and FFN, softmax, chunked, "
        "explicit token_type_ids with both types",
        dict(
            relative_positional_bias="rotary",
            normalization_type="layernorm",
            normalize_before_mega=True,
            normalize_before_ffn=True,
        ),
        ("padded48_tt", "short10", "full16"),
        add_pooling_layer=True,
    ),
    TinyCase(
        "mlm_rmsnorm_laplace_uniema_unchunked_lmdense",
        "MegaForMaskedLM",
        "rmsnorm (the buggy 4.x variant), laplace attention, unidirectional EMA, unchunked with "
        "chunk_size -1 (bias base = max_positions 64), add_lm_hidden_dense_layer, pre-norm MEGA + "
        "post-norm FFN, no token types",
        dict(
            normalization_type="rmsnorm",
            attention_activation="laplace",
            bidirectional=False,
            use_chunking=False,
            chunk_size=-1,
            add_lm_hidden_dense_layer=True,
            normalize_before_mega=True,
            normalize_before_ffn=False,
            add_token_type_embeddings=False,
        ),
        ("padded48", "short10"),
    ),
    TinyCase(
        "model_batchnorm_relu2_trunc_gelu",
        "MegaModel",
        "MegaModel without pooler; batchnorm with warmed running stats, relu2 attention, "
        "truncation 20, chunked, post-norm MEGA + pre-norm FFN, activation gelu",
        dict(
            normalization_type="batchnorm",
            attention_activation="relu2",
            truncation=20,
            normalize_before_mega=False,
            normalize_before_ffn=True,
            activation="gelu",
        ),
        ("padded48", "short10", "full16"),
        add_pooling_layer=False,
    ),
    TinyCase(
        "model_scalenorm_noaffine_rotary_unchunked_noffn",
        "MegaModel",
        "MegaModel with pooler; scalenorm with norm_affine False, rotary bias, unchunked "
        "(chunk_size -1), pre-norm, use_normalized_ffn False, relu activation",
        dict(
            norm_affine=False,
            relative_positional_bias="rotary",
            use_chunking=False,
            chunk_size=-1,
            normalize_before_mega=True,
            normalize_before_ffn=True,
            use_normalized_ffn=False,
            activation="relu",
        ),
        ("padded48", "short10"),
        add_pooling_layer=True,
    ),
    # layernorm + norm_affine=False cannot be built by 4.57.1: its _init_weights zeroes
    # `module.bias.data` of the LayerNorm, which is None (AttributeError). Hence batchnorm here.
    TinyCase(
        "mlm_batchnorm_noaffine_laplace_chunked_uniema_trunc",
        "MegaForMaskedLM",
        "batchnorm with norm_affine False (warmed running stats), laplace attention chunked "
        "(all-pad chunk), unidirectional EMA, truncation 8, LM dense, post-norm MEGA + pre-norm "
        "FFN, explicit token_type_ids",
        dict(
            normalization_type="batchnorm",
            norm_affine=False,
            attention_activation="laplace",
            bidirectional=False,
            truncation=8,
            add_lm_hidden_dense_layer=True,
            normalize_before_mega=False,
            normalize_before_ffn=True,
        ),
        ("padded48_tt", "short10"),
    ),
    TinyCase(
        "model_unchunked_bias_base_chunk16",
        "MegaModel",
        "MegaModel without pooler; use_chunking False but chunk_size 16, so the simple bias is "
        "indexed around 16 and L <= 16 (docs/mega.md#gated-attention)",
        dict(use_chunking=False, chunk_size=16),
        ("short10", "full16"),
        add_pooling_layer=False,
    ),
]


# ----------------------------------------------------------------------------------------------
# writing helpers


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_config_and_weights(model: torch.nn.Module, case_dir: Path) -> list[str]:
    """save_pretrained into a temp dir; keep config.json and model.safetensors; return the saved keys."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.copy(Path(tmp) / "config.json", case_dir / "config.json")
        shutil.copy(Path(tmp) / "model.safetensors", case_dir / "model.safetensors")
    from safetensors import safe_open

    with safe_open(case_dir / "model.safetensors", framework="pt") as f:
        return sorted(f.keys())


def write_full_config(config: MegaConfig, case_dir: Path) -> None:
    (case_dir / "config_full.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def base_outputs(prefix: str, out: Any, io: dict[str, torch.Tensor]) -> list[str]:
    """Copy every tensor field of a ModelOutput into io under "<prefix>.<field>[.<i>]"."""
    names = []
    for key, value in out.items():
        if key == "past_key_values" or value is None:
            continue
        if isinstance(value, torch.Tensor):
            io[f"{prefix}.{key}"] = value.detach().contiguous().clone()
            names.append(key)
        elif isinstance(value, tuple):
            for i, v in enumerate(value):
                io[f"{prefix}.{key}.{i}"] = v.detach().contiguous().clone()
            names.append(f"{key}[{len(value)}]")
    return names


def finish_case(case_dir: Path, io: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    save_file({k: v.detach().clone().contiguous() for k, v in io.items()}, str(case_dir / "io.safetensors"))
    (case_dir / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------------------------
# a) tiny encoder cases


def make_tiny_case(case: TinyCase, out_dir: Path) -> dict[str, Any]:
    cfg_kwargs = {**TINY_BASE, **case.overrides}
    config = MegaConfig(**cfg_kwargs)
    cls = getattr(mm, case.model_class)
    kwargs = {} if case.add_pooling_layer is None else {"add_pooling_layer": case.add_pooling_layer}
    model = build_tiny(cls, config, **kwargs)
    if config.normalization_type == "batchnorm":
        warm_batchnorm(model, config)
    model.eval()

    case_dir = out_dir / case.name
    case_dir.mkdir(parents=True, exist_ok=True)
    saved_keys = write_config_and_weights(model, case_dir)
    write_full_config(config, case_dir)

    io: dict[str, torch.Tensor] = {}
    inputs_meta: dict[str, Any] = {}
    vocab_mod = 120
    is_mlm = case.model_class == "MegaForMaskedLM"
    for input_name in case.inputs:
        inputs = tiny_inputs(input_name, vocab_mod)
        call = dict(inputs)
        if is_mlm:
            call["labels"] = mlm_labels(inputs)
        reset_ema_caches(model)
        with torch.no_grad():
            out = model(**call, output_hidden_states=True, output_attentions=case.attentions, return_dict=True)
        for k, v in call.items():
            io[f"{input_name}.{k}"] = v.contiguous()
        names = base_outputs(f"{input_name}.out", out, io)
        inputs_meta[input_name] = {
            "inputs": sorted(call),
            "outputs": names,
            "shape": list(inputs["input_ids"].shape),
        }

    sd = model.state_dict()
    sd_saved = {k: v for k, v in sd.items() if k in saved_keys}
    meta = {
        "kind": "tiny",
        "model_class": case.model_class,
        "add_pooling_layer": case.add_pooling_layer,
        "description": case.description,
        "config_overrides": case.overrides,
        "input_sets": inputs_meta,
        "state_dict_keys_saved": saved_keys,
        "state_dict_keys_not_saved": sorted(set(sd) - set(saved_keys)),
        "state_dict_checksum": state_dict_checksum(sd_saved),
        "num_parameters_saved": int(sum(v.numel() for k, v in sd_saved.items() if v.is_floating_point())),
        "tolerance": {"atol": 1e-5},
    }
    if case.name == "mlm_spec_tiny":
        meta["spec_checks"] = spec_tiny_checks(sd_saved, io, case_dir)
    finish_case(case_dir, io, meta)
    return meta


def spec_tiny_checks(sd_saved: dict[str, torch.Tensor], io: dict[str, torch.Tensor], case_dir: Path) -> dict[str, Any]:
    """Compare the exact tiny fixture with the reference numbers of docs/mega.md#fixtures."""
    checksum = state_dict_checksum(sd_saved)
    # MaskedLMOutput has no last_hidden_state: the last entry of hidden_states is it
    n_hidden = sum(1 for k in io if k.startswith("padded48.out.hidden_states."))
    h = io[f"padded48.out.hidden_states.{n_hidden - 1}"]  # (2, 48, 32)
    logits = io["padded48.out.logits"]
    with tempfile.TemporaryDirectory() as tmp:
        save_file(dict(sd_saved), str(Path(tmp) / "plain.safetensors"))
        plain_sha = _sha256(Path(tmp) / "plain.safetensors")
    figures = {
        "last_hidden_sum_row0": float(h[0].double().sum()),
        "last_hidden_sum_row1_real": float(h[1, :30].double().sum()),
        "logits_sum_row0": float(logits[0].double().sum()),
    }
    return {
        "checksum": checksum,
        "checksum_spec": SPEC_TINY_CHECKSUM,
        "checksum_matches": abs(checksum - SPEC_TINY_CHECKSUM) < 1e-9,
        "num_tensors": len(sd_saved),
        "sha256_plain_save_file": plain_sha,
        "sha256_spec_prefix_suffix": "d18668c1…f3112b5a",
        "sha256_model_safetensors": _sha256(case_dir / "model.safetensors"),
        "figures": figures,
        "figures_spec": SPEC_TINY_FIGURES,
        "figures_max_abs_diff": max(abs(figures[k] - SPEC_TINY_FIGURES[k]) for k in figures),
        "h_0_0_4": h[0, 0, :4].tolist(),
        "h_1_29_4": h[1, 29, :4].tolist(),
        "logits_0_5_4": logits[0, 5, :4].tolist(),
        "attn_1_2_0_4": io["padded48.out.attentions.0"][1, 2, 0, :4].tolist(),
    }


# ----------------------------------------------------------------------------------------------
# b) task heads


def make_head_case(name: str, out_dir: Path) -> dict[str, Any]:
    vocab_mod = 120
    notes: list[str] = []
    io: dict[str, torch.Tensor] = {}
    inputs_meta: dict[str, Any] = {}

    def run(model: torch.nn.Module, input_name: str, call: dict[str, torch.Tensor], **extra: Any) -> Any:
        reset_ema_caches(model)
        with torch.no_grad():
            out = model(**call, output_hidden_states=True, return_dict=True, **extra)
        for k, v in call.items():
            io[f"{input_name}.{k}"] = v.contiguous()
        inputs_meta[input_name] = {
            "inputs": sorted(call),
            "outputs": base_outputs(f"{input_name}.out", out, io),
            "shape": list(call["input_ids"].shape),
            **({"call_kwargs": {k: v for k, v in extra.items()}} if extra else {}),
        }
        return out

    if name == "seqcls":
        config = MegaConfig(**TINY_BASE, num_labels=3, problem_type="single_label_classification")
        model = build_tiny(mm.MegaForSequenceClassification, config).eval()
        inputs = tiny_inputs("padded48_tt", vocab_mod)
        run(model, "padded48_tt", {**inputs, "labels": torch.tensor([0, 2])})
        inputs = tiny_inputs("short10", vocab_mod)
        run(model, "short10", {**inputs, "labels": torch.tensor([1, 1])})
        model_class = "MegaForSequenceClassification"
    elif name == "tokcls":
        config = MegaConfig(**TINY_BASE, num_labels=5)
        model = build_tiny(mm.MegaForTokenClassification, config).eval()
        inputs = tiny_inputs("padded48", vocab_mod)
        labels = (inputs["input_ids"] * 7) % 5
        labels[inputs["attention_mask"] == 0] = -100
        run(model, "padded48", {**inputs, "labels": labels})
        model_class = "MegaForTokenClassification"
    elif name == "qa":
        config = MegaConfig(**TINY_BASE)
        model = build_tiny(mm.MegaForQuestionAnswering, config).eval()
        inputs = tiny_inputs("padded48_tt", vocab_mod)
        run(
            model,
            "padded48_tt",
            {**inputs, "start_positions": torch.tensor([3, 20]), "end_positions": torch.tensor([7, 25])},
        )
        model_class = "MegaForQuestionAnswering"
    elif name == "mc":
        config = MegaConfig(**TINY_BASE)
        model = build_tiny(mm.MegaForMultipleChoice, config).eval()
        ids = torch.stack([_ids([0, 17], 48, vocab_mod), _ids([5, 29], 48, vocab_mod)])  # (B=2, choices=2, L)
        mask = torch.ones_like(ids)
        mask[0, 1, 40:] = 0
        mask[1, 0, 30:] = 0
        ids[mask == 0] = 1
        tt = torch.zeros_like(ids)
        tt[..., 20:] = 1
        tt[mask == 0] = 0
        run(
            model,
            "choices2_L48",
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt, "labels": torch.tensor([1, 0])},
        )
        model_class = "MegaForMultipleChoice"
    elif name in ("causal", "causal_chunked"):
        chunked = name == "causal_chunked"
        overrides = dict(
            is_decoder=True,
            bidirectional=False,
            add_lm_hidden_dense_layer=True,
            use_chunking=chunked,
            chunk_size=16 if chunked else -1,
        )
        config = MegaConfig(**{**TINY_BASE, **overrides})
        model = build_tiny(mm.MegaForCausalLM, config).eval()
        model_class = "MegaForCausalLM"
        length = 32 if chunked else 12
        ids = _ids([0, 17], length, vocab_mod)  # (2, L)
        full = run(model, f"full{length}", {"input_ids": ids, "labels": ids.clone()}, use_cache=False)
        # the same without labels but with use_cache=True: returns the cache alongside the logits
        try:
            run(model, f"full{length}_use_cache", {"input_ids": ids}, use_cache=True)
        except Exception as err:  # record what the port cannot do
            notes.append(f"full forward with use_cache=True failed in 4.57.1: {type(err).__name__}: {err}")
        # incremental decode: prefix, then 2 single-token steps with past_key_values
        # chunked: the prefix must itself be a multiple of chunk_size (16), so the 2 steps then
        # start a new chunk (the port wipes its K/V cache when a chunk fills)
        prefix = 16 if chunked else length - 2
        try:
            reset_ema_caches(model)
            with torch.no_grad():
                step0 = model(input_ids=ids[:, :prefix], use_cache=True, return_dict=True)
                past = step0.past_key_values
                io["incremental.input_ids"] = ids.contiguous()
                io["incremental.prefix.logits"] = step0.logits.contiguous()
                step_diffs = []
                for s in range(2):
                    pos = prefix + s
                    out = model(input_ids=ids[:, pos : pos + 1], past_key_values=past, use_cache=True, return_dict=True)
                    past = out.past_key_values
                    io[f"incremental.step{s}.logits"] = out.logits.contiguous()
                    step_diffs.append(float((out.logits[:, 0] - full.logits[:, pos]).abs().max()))
            inputs_meta["incremental"] = {
                "prefix_length": prefix,
                "steps": 2,
                "protocol": "model(input_ids=ids[:, :prefix], use_cache=True); then for s in 0,1: "
                "model(input_ids=ids[:, prefix+s:prefix+s+1], past_key_values=past, use_cache=True)",
                "max_abs_diff_step_vs_full_forward": step_diffs,
            }
            notes.append(f"incremental decode vs full forward logits max abs diff per step: {step_diffs}")
        except Exception as err:
            notes.append(
                f"incremental decode (prefix {prefix} + 2 steps) failed in 4.57.1: {type(err).__name__}: {err}"
            )
    else:
        raise ValueError(f"unknown head case {name!r}")

    case_dir = out_dir / f"head_{name}"
    case_dir.mkdir(parents=True, exist_ok=True)
    saved_keys = write_config_and_weights(model, case_dir)
    write_full_config(config, case_dir)
    sd = model.state_dict()
    meta = {
        "kind": "head",
        "model_class": model_class,
        "description": f"task head {model_class} on the tiny base config",
        "input_sets": inputs_meta,
        "state_dict_keys_saved": saved_keys,
        "state_dict_keys_not_saved": sorted(set(sd) - set(saved_keys)),
        "state_dict_checksum": state_dict_checksum({k: v for k, v in sd.items() if k in saved_keys}),
        "notes": notes,
        "tolerance": {"atol": 1e-5},
    }
    finish_case(case_dir, io, meta)
    return meta


# ----------------------------------------------------------------------------------------------
# c) seed-like config, 2 layers, weights regenerated from tests/mega_fixture_weights.py


def seed_positions(length: int, stride: int, extra: list[int]) -> list[int]:
    pos = set(range(0, length, stride)) | {p for p in extra if 0 <= p < length} | set(range(length - 4, length))
    return sorted(pos)


SEED_LOGIT_POSITIONS = {"seq1024": [0, 511, 1023], "padded2048": [0, 1023, 1024, 1499]}
SEED_VOCAB_HEAD = 1024  # full logits stored for vocab ids < this, plus every 16th id
SEED_VOCAB_STRIDE = 16


def seed_inputs(name: str) -> dict[str, torch.Tensor]:
    if name == "seq1024":
        ids = _ids([0], 1024, 50000)  # (1, 1024)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if name == "padded2048":
        ids = _ids([0, 17], 2048, 50000)  # (2, 2048)
        mask = torch.ones_like(ids)
        ids[1, 1500:] = 1
        mask[1, 1500:] = 0
        return {"input_ids": ids, "attention_mask": mask}
    raise ValueError(name)


def make_seed_case(out_dir: Path) -> dict[str, Any]:
    config = MegaConfig(**SEED_2L)
    torch.manual_seed(0)
    model = mm.MegaForMaskedLM(config)
    full_sd = model.state_dict()
    tied = "mlm_head.weight"
    shapes = {k: list(v.shape) for k, v in full_sd.items() if k != tied}
    sd = seeded_state_dict(shapes, seed=0, padding_idx=config.pad_token_id)
    checksum = state_dict_checksum(sd)
    load_sd = dict(sd)
    load_sd[tied] = sd["mega.embedding_layer.word_embeddings.weight"]
    model.load_state_dict(load_sd, strict=True)
    model.tie_weights()
    assert model.mlm_head.weight.data_ptr() == model.mega.embedding_layer.word_embeddings.weight.data_ptr()
    model.eval()

    case_dir = out_dir / "seed2l_mlm"
    case_dir.mkdir(parents=True, exist_ok=True)
    write_full_config(config, case_dir)
    (case_dir / "config.json").write_text(config.to_json_string(use_diff=True))

    io: dict[str, torch.Tensor] = {}
    inputs_meta: dict[str, Any] = {}
    for input_name, stride, extra in (
        ("seq1024", 32, []),
        ("padded2048", 64, list(range(1020, 1028)) + list(range(1496, 1504))),
    ):
        inputs = seed_inputs(input_name)
        labels = mlm_labels(inputs)
        reset_ema_caches(model)
        with torch.no_grad():
            out = model(**inputs, labels=labels, output_hidden_states=True, return_dict=True)
        length = inputs["input_ids"].shape[1]
        positions = seed_positions(length, stride, extra)
        pos_t = torch.tensor(positions)
        mask = inputs["attention_mask"].double()  # (B, L)
        last = out.hidden_states[-1]  # (B, L, H)
        p = f"{input_name}"
        for k, v in inputs.items():
            io[f"{p}.{k}"] = v.contiguous()
        io[f"{p}.labels"] = labels
        io[f"{p}.positions"] = pos_t
        io[f"{p}.out.loss"] = out.loss.detach().clone()
        io[f"{p}.out.last_hidden_at_positions"] = last[:, pos_t].contiguous()  # (B, P, H)
        io[f"{p}.out.last_hidden_row_sum_real"] = (last.double() * mask[..., None]).sum(dim=(1, 2))  # (B,)
        for i, h in enumerate(out.hidden_states):
            io[f"{p}.out.hidden_position_sums.{i}"] = h.double().sum(-1)  # (B, L)
        lpos = torch.tensor(SEED_LOGIT_POSITIONS[input_name])
        vocab_idx = torch.tensor(
            sorted(set(range(SEED_VOCAB_HEAD)) | set(range(0, config.vocab_size, SEED_VOCAB_STRIDE)))
        )
        io[f"{p}.logit_positions"] = lpos
        io[f"{p}.logit_vocab_ids"] = vocab_idx
        io[f"{p}.out.logits_at_positions"] = out.logits[:, lpos][..., vocab_idx].contiguous()  # (B, 4, V')
        io[f"{p}.out.logits_position_sums"] = out.logits.double().sum(-1)  # (B, L)
        io[f"{p}.out.logits_position_logsumexp"] = torch.logsumexp(out.logits.double(), dim=-1)  # (B, L)
        inputs_meta[input_name] = {
            "inputs": sorted(inputs) + ["labels"],
            "shape": list(inputs["input_ids"].shape),
            "hidden_positions": positions,
            "logit_positions": lpos.tolist(),
            "logit_vocab_ids": f"range({SEED_VOCAB_HEAD}) | range(0, {config.vocab_size}, {SEED_VOCAB_STRIDE})",
            "fingerprints": {
                "last_hidden_norm": float(last.norm()),
                "last_hidden_0_0_4": last[0, 0, :4].tolist(),
                "logits_norm": float(out.logits.norm()),
                "loss": float(out.loss),
            },
        }
        del out
        logger.info("seed case %s done", input_name)

    meta = {
        "kind": "seed",
        "model_class": "MegaForMaskedLM",
        "description": "docs/mega.md#seed-configuration seed reconstruction with 2 layers; weights from "
        "tests/mega_fixture_weights.seeded_state_dict(shapes, seed=0, padding_idx=1), "
        "mlm_head.weight tied to the word embeddings",
        "weights": {
            "generator": "tests/mega_fixture_weights.py::seeded_state_dict",
            "seed": 0,
            "padding_idx": config.pad_token_id,
            "tied": {tied: "mega.embedding_layer.word_embeddings.weight"},
            "shapes": shapes,
            "checksum": checksum,
            "num_tensors": len(shapes),
        },
        "input_sets": inputs_meta,
        "stored": {
            "last_hidden_at_positions": "(B, P, H) last hidden state (= hidden_states[-1]) at <set>.positions",
            "last_hidden_row_sum_real": "(B,) float64 sum of last hidden over real (mask 1) positions",
            "hidden_position_sums.i": "(B, L) float64 per-position sum over H of hidden_states[i] "
            "(0 = embeddings, 1 = layer 0 output, 2 = layer 1 output)",
            "logits_at_positions": "(B, len(logit_positions), len(logit_vocab_ids)) logits subset",
            "logits_position_sums": "(B, L) float64 per-position sum of logits over the vocabulary",
            "logits_position_logsumexp": "(B, L) float64 per-position logsumexp over the vocabulary",
            "loss": "MLM loss with labels = ids at every 3rd real position",
        },
        "tolerance": {"atol": 1e-5, "position_sum_atol_per_element": 2e-6},
    }
    finish_case(case_dir, io, meta)
    return meta


# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# d) MEGA as a decoder with its own gated cross-attention (add_cross_attention=True)

CROSS_CASES: dict[str, dict[str, Any]] = {
    # MegaForCausalLM, unchunked (bias base = max_positions 64), simple bias, softmax, post-norm
    "cross_causal_simple_softmax": dict(
        model_class="MegaForCausalLM",
        overrides=dict(use_chunking=False, chunk_size=-1, add_lm_hidden_dense_layer=True),
        target_length=12,
        source_length=20,
    ),
    # MegaModel, chunked self-attention (chunk 16, 32 targets), rotary bias over 40 sources, laplace, pre-norm
    "cross_model_chunked_rotary_laplace_prenorm": dict(
        model_class="MegaModel",
        overrides=dict(
            use_chunking=True,
            chunk_size=16,
            relative_positional_bias="rotary",
            attention_activation="laplace",
            normalize_before_mega=True,
            normalize_before_ffn=True,
            normalization_type="layernorm",
        ),
        target_length=32,
        source_length=40,
    ),
}


def cross_inputs(batch: int, target_length: int, source_length: int, vocab_mod: int) -> dict[str, torch.Tensor]:
    """Decoder ids and mask (row 1 padded from 3/4 on), encoder states N(0,1) (seed 7), source mask (row 1 from 2/3)."""
    ids = _ids([0, 17][:batch], target_length, vocab_mod)  # (B, T)
    mask = torch.ones_like(ids)
    mask[1, target_length * 3 // 4 :] = 0
    ids[1, target_length * 3 // 4 :] = 1
    generator = torch.Generator().manual_seed(7)
    states = torch.randn(batch, source_length, TINY_BASE["hidden_size"], generator=generator)  # (B, S, H)
    source_mask = torch.ones(batch, source_length, dtype=torch.int64)
    source_mask[1, source_length * 2 // 3 :] = 0
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "encoder_hidden_states": states,
        "encoder_attention_mask": source_mask,
    }


def make_cross_case(name: str, out_dir: Path) -> dict[str, Any]:
    spec = CROSS_CASES[name]
    overrides = dict(is_decoder=True, bidirectional=False, add_cross_attention=True, **spec["overrides"])
    config = MegaConfig(**{**TINY_BASE, **overrides})
    cls = getattr(mm, spec["model_class"])
    model = build_tiny(cls, config, **({"add_pooling_layer": False} if cls is mm.MegaModel else {})).eval()
    full = cross_inputs(2, spec["target_length"], spec["source_length"], 120)
    io: dict[str, torch.Tensor] = {}
    inputs_meta: dict[str, Any] = {}
    notes: list[str] = []
    call_sets = {
        "masked": full,
        "unmasked": {k: full[k] for k in ("input_ids", "encoder_hidden_states")},
    }
    outputs = {}
    for input_name, call in call_sets.items():
        reset_ema_caches(model)
        with torch.no_grad():
            out = model(**call, use_cache=False, output_hidden_states=True, output_attentions=True, return_dict=True)
        outputs[input_name] = out
        for k, v in call.items():
            io[f"{input_name}.{k}"] = v.contiguous()
        inputs_meta[input_name] = {
            "inputs": sorted(call),
            "outputs": base_outputs(f"{input_name}.out", out, io),
            "shape": list(call["input_ids"].shape),
            "call_kwargs": {"use_cache": False},
        }
    # the port's own incremental decoding (one token at a time), compared with its full forward
    if cls is mm.MegaForCausalLM:
        try:
            call = call_sets["unmasked"]
            past = None
            diffs = []
            with torch.no_grad():
                for pos in range(spec["target_length"]):
                    step = model(
                        input_ids=call["input_ids"][:, pos : pos + 1],
                        encoder_hidden_states=call["encoder_hidden_states"],
                        past_key_values=past,
                        use_cache=True,
                        return_dict=True,
                    )
                    past = step.past_key_values
                    diffs.append(float((step.logits[:, 0] - outputs["unmasked"].logits[:, pos]).abs().max()))
            notes.append(
                f"4.57.1 incremental decoding (token by token) vs its full forward, max abs logit diff "
                f"per position: {[f'{d:.2e}' for d in diffs]}"
            )
        except Exception as err:  # record what the port cannot do
            notes.append(f"4.57.1 incremental decoding with cross-attention failed: {type(err).__name__}: {err}")

    case_dir = out_dir / name
    case_dir.mkdir(parents=True, exist_ok=True)
    saved_keys = write_config_and_weights(model, case_dir)
    write_full_config(config, case_dir)
    sd = model.state_dict()
    meta = {
        "kind": "cross",
        "model_class": spec["model_class"],
        "description": f"{spec['model_class']} decoder with gated cross-attention: {spec['overrides']}",
        "config_overrides": overrides,
        "input_sets": inputs_meta,
        "state_dict_keys_saved": saved_keys,
        "state_dict_keys_not_saved": sorted(set(sd) - set(saved_keys)),
        "state_dict_checksum": state_dict_checksum({k: v for k, v in sd.items() if k in saved_keys}),
        "notes": notes,
        "tolerance": {"atol": 1e-5},
    }
    finish_case(case_dir, io, meta)
    return meta


PORT_LIMITATIONS = [
    "layernorm with norm_affine=False: MegaPreTrainedModel._init_weights raises AttributeError "
    "('NoneType' object has no attribute 'data') on the bias-less LayerNorm, so no fixture exists",
    "syncbatchnorm: not fixtured (needs a process group; in eval it is BatchNorm1d math)",
]

HEAD_CASES = ["seqcls", "tokcls", "qa", "mc", "causal", "causal_chunked"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "mega")
    parser.add_argument("--only", nargs="*", default=None, help="case names to (re)build; default all")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)

    builders: dict[str, Callable[[], dict[str, Any]]] = {}
    for case in TINY_CASES:
        builders[case.name] = lambda case=case: make_tiny_case(case, out_dir)
    for name in HEAD_CASES:
        builders[f"head_{name}"] = lambda name=name: make_head_case(name, out_dir)
    builders["seed2l_mlm"] = lambda: make_seed_case(out_dir)
    for name in CROSS_CASES:
        builders[name] = lambda name=name: make_cross_case(name, out_dir)

    selected = args.only or list(builders)
    unknown = [s for s in selected if s not in builders]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {list(builders)}")

    manifest_path = out_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"cases": {}}
    for name in selected:
        logger.info("building %s", name)
        meta = builders[name]()
        manifest["cases"][name] = {
            "model_class": meta["model_class"],
            "kind": meta["kind"],
            "description": meta["description"],
        }
        if name == "mlm_spec_tiny":
            sc = meta["spec_checks"]
            print(
                f"[mlm_spec_tiny] weight checksum {sc['checksum']!r} (spec {SPEC_TINY_CHECKSUM!r}) "
                f"matches={sc['checksum_matches']}; tensors {sc['num_tensors']}; "
                f"output figures max abs diff vs docs/mega.md {sc['figures_max_abs_diff']:.3e}"
            )
        for note in meta.get("notes", []):
            print(f"[{name}] note: {note}")

    manifest["cases"] = {k: manifest["cases"][k] for k in builders if k in manifest["cases"]}
    manifest["port_limitations"] = PORT_LIMITATIONS
    manifest["transformers_version"] = transformers.__version__
    manifest["torch_version"] = torch.__version__
    manifest["python"] = sys.version.split()[0]
    manifest["command"] = " ".join([REFERENCE_COMMAND, *(argv or sys.argv[1:])])
    files = {}
    total = 0
    for path in sorted(out_dir.rglob("*")):
        if path.is_file() and path.name != "manifest.json":
            rel = path.relative_to(out_dir).as_posix()
            files[rel] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
            total += path.stat().st_size
    manifest["files"] = files
    manifest["total_bytes"] = total
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(files)} files, {total / 1e6:.2f} MB, to {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
