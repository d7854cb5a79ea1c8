"""Parity of the native MEGA against fixtures produced by the transformers 4.57.1 port.

The fixtures (tests/fixtures/mega/, written by scripts/make_fixtures.py under transformers
4.57.1) hold the port's saved weights, its config, inputs and reference outputs. These tests
need neither 4.57.1 nor the network: they load each fixture into the native classes and
compare every stored output (float32, CPU, eval; atol 1e-5 unless a sum over many elements).

A class missing from the native package fails its tests (it is not skipped).
"""

from __future__ import annotations

import json
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import mega2bart.models.mega as mega
from mega2bart.models.mega import modeling_mega

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mega_fixture_weights import seeded_state_dict, state_dict_checksum  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "mega"
# MEGA_PARITY_REPORT=1 pytest tests/test_mega_parity.py -s | grep ^PARITY | sort -g -k2 | tail
REPORT = bool(os.environ.get("MEGA_PARITY_REPORT"))
ATOL = 1e-5
RTOL = 1e-5
LABEL_KEYS = ("labels", "start_positions", "end_positions")
NOT_MODEL_INPUTS = ("positions", "logit_positions", "logit_vocab_ids")  # seed-case bookkeeping
TIED_KEYS = {
    "mlm_head.weight": "mega.embedding_layer.word_embeddings.weight",
    "lm_head.weight": "mega.embedding_layer.word_embeddings.weight",
}


# ----------------------------------------------------------------------------------------------
# helpers


def native_class(name: str) -> type:
    cls = getattr(mega, name, None) or getattr(modeling_mega, name, None)
    if cls is None:
        pytest.fail(f"native {name} is missing: neither mega2bart.models.mega nor its modeling_mega defines it")
    return cls


@cache
def read_case(name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    case_dir = FIXTURES / name
    meta = json.loads((case_dir / "meta.json").read_text())
    config = json.loads((case_dir / "config_full.json").read_text())
    io = load_file(str(case_dir / "io.safetensors"))
    return meta, config, io


def list_cases(kind: str) -> list[str]:
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    return sorted(name for name, info in manifest["cases"].items() if info["kind"] == kind)


def set_inputs(io: dict[str, torch.Tensor], input_set: str, with_labels: bool = True) -> dict[str, torch.Tensor]:
    prefix = f"{input_set}."
    out = {}
    for key, value in io.items():
        if key.startswith(prefix) and ".out." not in key and key.count(".") == 1:
            name = key[len(prefix) :]
            if name in NOT_MODEL_INPUTS or (name in LABEL_KEYS and not with_labels):
                continue
            out[name] = value
    return out


def set_outputs(io: dict[str, torch.Tensor], input_set: str) -> dict[str, torch.Tensor]:
    prefix = f"{input_set}.out."
    return {key[len(prefix) :]: value for key, value in io.items() if key.startswith(prefix)}


def native_output(out: Any, name: str) -> torch.Tensor:
    """ "hidden_states.2" -> out.hidden_states[2]; "logits" -> out.logits."""
    field, _, index = name.partition(".")
    value = getattr(out, field, None)
    if value is None:
        raise AssertionError(f"native output has no {field!r} (needed for stored output {name!r})")
    if index:
        if len(value) <= int(index):
            raise AssertionError(f"native output {field} has {len(value)} entries, fixture has index {index}")
        value = value[int(index)]
    return value


def max_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.detach().double() - expected.double()).abs().max()) if expected.numel() else 0.0


def check_close(
    actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float = ATOL, rtol: float = RTOL
) -> None:
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{what}: native shape {tuple(actual.shape)} != 4.57.1 shape {tuple(expected.shape)}"
    )
    a, e = actual.detach().double(), expected.double()
    if REPORT:
        print(f"PARITY {max_diff(a, e):.3e} {what}")
    bad = (a - e).abs() > atol + rtol * e.abs()
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(
            f"{what}: max abs diff {max_diff(a, e):.3e} > atol {atol:.1e} (+ rtol {rtol:.0e}); "
            f"{int(bad.sum())}/{bad.numel()} elements off, first at {where}: native {float(a[where]):.6g} "
            f"vs 4.57.1 {float(e[where]):.6g}"
        )


def build_native(meta: dict[str, Any], config_dict: dict[str, Any]) -> torch.nn.Module:
    cls = native_class(meta["model_class"])
    config = mega.MegaConfig(**config_dict)
    if meta["model_class"] == "MegaModel":
        return cls(config, add_pooling_layer=bool(meta["add_pooling_layer"]))
    return cls(config)


def load_fixture_weights(model: torch.nn.Module, case: str, meta: dict[str, Any]) -> None:
    """Load model.safetensors; only the tied head weight may be missing, nothing unexpected."""
    state = load_file(str(FIXTURES / case / "model.safetensors"))
    result = model.load_state_dict(state, strict=False)
    expected_missing = set(meta["state_dict_keys_not_saved"])
    assert set(result.missing_keys) == expected_missing and not result.unexpected_keys, (
        f"{case}: loading the 4.57.1 state dict: missing {sorted(result.missing_keys)} "
        f"(expected {sorted(expected_missing)}), unexpected {sorted(result.unexpected_keys)}"
    )
    model.tie_weights()
    native_state = model.state_dict()
    for key in expected_missing:
        source = TIED_KEYS[key]
        assert torch.equal(native_state[key], state[source]), f"{case}: {key} is not tied to {source}"


def input_sets(kind: str) -> list[tuple[str, str]]:
    params = []
    for case in list_cases(kind):
        meta, _, _ = read_case(case)
        for input_set in meta["input_sets"]:
            if input_set != "incremental":
                params.append((case, input_set))
    return params


def real_query_mask(attn: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, n_chunks, C, C) bool: True on rows whose query position is a real token."""
    batch, n_chunks, rows, _ = attn.shape
    if mask is None:
        return torch.ones(attn.shape, dtype=torch.bool)
    keep = mask.bool()
    if n_chunks * rows != keep.shape[1]:  # L < chunk or unchunked: one block of length L
        raise AssertionError(f"attention shape {tuple(attn.shape)} does not cover mask length {keep.shape[1]}")
    return keep.view(batch, n_chunks, rows, 1).expand(attn.shape)


def compare_outputs(
    case: str, input_set: str, out: Any, expected: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]
) -> None:
    mask = inputs.get("attention_mask")
    for name, ref in sorted(expected.items()):
        what = f"{case}/{input_set}/{name}"
        actual = native_output(out, name)
        if name.startswith("attentions."):
            assert tuple(actual.shape) == tuple(ref.shape), (
                f"{what}: native shape {tuple(actual.shape)} != 4.57.1 shape {tuple(ref.shape)} "
                "(the port returns (B, n_chunks, chunk, chunk))"
            )
            rows = real_query_mask(ref, mask)
            check_close(actual[rows], ref[rows], what + " (real query rows)")
            continue
        if mask is not None and ref.dim() >= 2 and tuple(ref.shape[:2]) == tuple(mask.shape) and not bool(mask.all()):
            real = mask.bool()
            check_close(actual[real], ref[real], what + " (real positions)")
            check_close(actual[~real], ref[~real], what + " (pad positions only; real positions match)")
        else:
            check_close(actual, ref, what)


# ----------------------------------------------------------------------------------------------
# fixture integrity (no native model needed beyond the import)


def test_manifest_hashes() -> None:
    import hashlib

    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    assert manifest["transformers_version"] == "4.57.1"
    for rel, info in manifest["files"].items():
        digest = hashlib.sha256((FIXTURES / rel).read_bytes()).hexdigest()
        assert digest == info["sha256"], f"fixture file {rel} changed since scripts/make_fixtures.py wrote it"


def test_spec_tiny_fixture_matches_spec() -> None:
    meta, _, _ = read_case("mlm_spec_tiny")
    checks = meta["spec_checks"]
    assert checks["checksum_matches"], checks
    assert checks["num_tensors"] == 43
    assert checks["sha256_plain_save_file"].startswith("d18668c1")
    assert checks["sha256_plain_save_file"].endswith("f3112b5a")


# ----------------------------------------------------------------------------------------------
# a) tiny encoder cases and b) heads


@pytest.mark.parametrize(("case", "input_set"), input_sets("tiny") + input_sets("head"))
def test_tiny_and_head_parity(case: str, input_set: str) -> None:
    meta, config_dict, io = read_case(case)
    torch.manual_seed(0)
    model = build_native(meta, config_dict)
    load_fixture_weights(model, case, meta)
    model.eval()
    inputs = set_inputs(io, input_set)
    kwargs = dict(meta["input_sets"][input_set].get("call_kwargs", {}))
    expected = set_outputs(io, input_set)
    want_attn = any(k.startswith("attentions.") for k in expected)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, output_attentions=want_attn, return_dict=True, **kwargs)
    compare_outputs(case, input_set, out, expected, inputs)


@pytest.mark.parametrize("case", list_cases("tiny") + list_cases("head"))
def test_from_pretrained_fixture_dir(case: str) -> None:
    """The 4.57.1 save_pretrained folder loads with the native from_pretrained, tying the head."""
    meta, _, io = read_case(case)
    cls = native_class(meta["model_class"])
    kwargs = {"add_pooling_layer": bool(meta["add_pooling_layer"])} if meta["model_class"] == "MegaModel" else {}
    model, info = cls.from_pretrained(FIXTURES / case, output_loading_info=True, **kwargs)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], (
        f"{case}: from_pretrained loading info {info}"
    )
    model.eval()
    input_set = next(s for s in meta["input_sets"] if s != "incremental")
    inputs = set_inputs(io, input_set)
    expected = {k: v for k, v in set_outputs(io, input_set).items() if not k.startswith("attentions.")}
    with torch.no_grad():
        out = model(
            **inputs,
            output_hidden_states=True,
            return_dict=True,
            **meta["input_sets"][input_set].get("call_kwargs", {}),
        )
    compare_outputs(case, input_set, out, expected, inputs)


def padded_tiny_cases() -> list[str]:
    return [c for c in list_cases("tiny") if {"padded48", "padded48_tt"} & set(read_case(c)[0]["input_sets"])]


@pytest.mark.parametrize("case", padded_tiny_cases())
def test_tiny_any_length_real_tokens(case: str) -> None:
    """Row 1 of the padded L=48 batch cut to its 30 real tokens (not a multiple of chunk 16)."""
    meta, config_dict, io = read_case(case)
    input_set = "padded48" if "padded48" in meta["input_sets"] else "padded48_tt"
    model = build_native(meta, config_dict)
    load_fixture_weights(model, case, meta)
    model.eval()
    inputs = set_inputs(io, input_set, with_labels=False)
    real = int(inputs["attention_mask"][1].sum())
    assert real == 30
    cut = {k: v[1:2, :real] for k, v in inputs.items() if k != "attention_mask"}
    with torch.no_grad():
        out = model(**cut, output_hidden_states=True, return_dict=True)
    for name, ref in set_outputs(io, input_set).items():
        if name.startswith("attentions.") or name in ("loss", "pooler_output") or ref.dim() < 2:
            continue
        check_close(native_output(out, name), ref[1:2, :real], f"{case}/{input_set}[row 1, :{real}]/{name}")


def test_causal_incremental_decode() -> None:
    """Prefix + 2 cached single-token steps reproduce the port's logits (non-chunked decoder)."""
    case = "head_causal"
    meta, config_dict, io = read_case(case)
    cls = native_class("MegaForCausalLM")
    model = cls(mega.MegaConfig(**config_dict))
    load_fixture_weights(model, case, meta)
    model.eval()
    info = meta["input_sets"]["incremental"]
    ids = io["incremental.input_ids"]
    prefix = info["prefix_length"]
    with torch.no_grad():
        out = model(input_ids=ids[:, :prefix], use_cache=True, return_dict=True)
        check_close(out.logits, io["incremental.prefix.logits"], f"{case}/incremental/prefix logits")
        past = out.past_key_values
        for step in range(info["steps"]):
            pos = prefix + step
            out = model(input_ids=ids[:, pos : pos + 1], past_key_values=past, use_cache=True, return_dict=True)
            past = out.past_key_values
            check_close(out.logits, io[f"incremental.step{step}.logits"], f"{case}/incremental/step{step} logits")


# ----------------------------------------------------------------------------------------------
# c) the seed configuration with 2 layers (weights regenerated from tests/mega_fixture_weights.py)


@pytest.fixture(scope="module")
def seed_model() -> torch.nn.Module:
    meta, config_dict, _ = read_case("seed2l_mlm")
    torch.manual_seed(0)
    model = mega.MegaForMaskedLM(mega.MegaConfig(**config_dict))
    weights = meta["weights"]
    native_shapes = {k: list(v.shape) for k, v in model.state_dict().items() if k not in weights["tied"]}
    assert native_shapes == weights["shapes"], (
        "native state-dict keys/shapes differ from 4.57.1: "
        f"only native {sorted(set(native_shapes) - set(weights['shapes']))}, "
        f"only 4.57.1 {sorted(set(weights['shapes']) - set(native_shapes))}, "
        f"shape mismatch {[k for k in native_shapes if k in weights['shapes'] and native_shapes[k] != weights['shapes'][k]]}"
    )
    state = seeded_state_dict(weights["shapes"], seed=weights["seed"], padding_idx=weights["padding_idx"])
    assert state_dict_checksum(state) == pytest.approx(weights["checksum"], abs=1e-9), "seeded weights differ"
    result = model.load_state_dict(state, strict=False)
    assert set(result.missing_keys) == set(weights["tied"]) and not result.unexpected_keys, result
    model.tie_weights()
    for target, source in weights["tied"].items():
        assert torch.equal(model.state_dict()[target], state[source]), f"{target} not tied to {source}"
    return model.eval()


def check_seed_outputs(
    out: Any,
    io: dict[str, torch.Tensor],
    input_set: str,
    rows: slice,
    length: int,
    what: str,
    compare_loss: bool = True,
) -> None:
    """Compare the stored subsets, restricted to batch rows `rows` and positions < `length`."""
    p = f"{input_set}.out."
    last = out.hidden_states[-1]  # (b, L, H)
    positions = io[f"{input_set}.positions"]
    sel = positions < length
    check_close(
        last[:, positions[sel]], io[p + "last_hidden_at_positions"][rows][:, sel], f"{what}/last_hidden_at_positions"
    )
    hidden_size = last.shape[-1]
    for i, h in enumerate(out.hidden_states):
        check_close(
            h.double().sum(-1),
            io[p + f"hidden_position_sums.{i}"][rows][:, :length],
            f"{what}/hidden_position_sums.{i}",
            atol=2e-6 * hidden_size,
        )
    logits = out.logits
    check_close(
        torch.logsumexp(logits.double(), -1),
        io[p + "logits_position_logsumexp"][rows][:, :length],
        f"{what}/logits_position_logsumexp",
        atol=2e-5,
    )
    check_close(
        logits.double().sum(-1),
        io[p + "logits_position_sums"][rows][:, :length],
        f"{what}/logits_position_sums",
        atol=2e-6 * logits.shape[-1],
    )
    lpos = io[f"{input_set}.logit_positions"]
    lsel = lpos < length
    vocab = io[f"{input_set}.logit_vocab_ids"]
    check_close(
        logits[:, lpos[lsel]][..., vocab], io[p + "logits_at_positions"][rows][:, lsel], f"{what}/logits_at_positions"
    )
    if compare_loss:
        check_close(out.loss, io[p + "loss"], f"{what}/loss")


@pytest.mark.parametrize("input_set", ["seq1024", "padded2048"])
def test_seed_config_parity(seed_model: torch.nn.Module, input_set: str) -> None:
    _, _, io = read_case("seed2l_mlm")
    inputs = set_inputs(io, input_set)
    with torch.no_grad():
        out = seed_model(**inputs, output_hidden_states=True, return_dict=True)
    length = inputs["input_ids"].shape[1]
    check_seed_outputs(out, io, input_set, slice(None), length, f"seed2l_mlm/{input_set}")
    mask = inputs["attention_mask"].double()
    row_sums = (out.hidden_states[-1].double() * mask[..., None]).sum(dim=(1, 2))
    expected = io[f"{input_set}.out.last_hidden_row_sum_real"]
    n = mask.sum(1) * out.hidden_states[-1].shape[-1]
    check_close(row_sums, expected, f"seed2l_mlm/{input_set}/last_hidden_row_sum_real", atol=float((2e-6 * n).max()))


def test_seed_config_any_length(seed_model: torch.nn.Module) -> None:
    """Row 1 of the padded 2048 batch cut to its 1500 real tokens (not a multiple of 1024)."""
    _, _, io = read_case("seed2l_mlm")
    inputs = set_inputs(io, "padded2048", with_labels=False)
    real = int(inputs["attention_mask"][1].sum())
    assert real == 1500
    with torch.no_grad():
        out = seed_model(input_ids=inputs["input_ids"][1:2, :real], output_hidden_states=True, return_dict=True)
    assert out.logits.shape == (1, real, seed_model.config.vocab_size)
    check_seed_outputs(
        out, io, "padded2048", slice(1, 2), real, "seed2l_mlm/padded2048[row 1, :1500]", compare_loss=False
    )
