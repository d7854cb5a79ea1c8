"""MEGA task heads and the causal LM: parity with the 4.57.1 port, Auto classes, incremental decoding, generate."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
import torch
from mega_tiny import perturbed, random_ids, tiny_config
from safetensors.torch import load_file

import mega2bart  # noqa: F401  (registers MEGA with the Auto classes)
from mega2bart.models.mega import (
    MegaCache,
    MegaConfig,
    MegaForCausalLM,
    MegaForMaskedLM,
    MegaForMultipleChoice,
    MegaForQuestionAnswering,
    MegaForSequenceClassification,
    MegaForTokenClassification,
    MegaModel,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "mega"
HEAD_CASES = ["head_seqcls", "head_tokcls", "head_qa", "head_mc", "head_causal", "head_causal_chunked"]
ATOL = 1e-5


def _causal(**overrides) -> MegaForCausalLM:
    torch.manual_seed(0)
    config = tiny_config(is_decoder=True, bidirectional=False, **overrides)
    return perturbed(MegaForCausalLM(config)).eval()


# ----------------------------------------------------------------------------------------------
# parity with the 4.57.1 port (fixtures written by scripts/make_fixtures.py)


@pytest.mark.parametrize("case", HEAD_CASES)
def test_head_parity_with_port(case: str) -> None:
    """The port's saved folder loads with no missing/unexpected keys and every stored output matches."""
    meta = json.loads((FIXTURES / case / "meta.json").read_text())
    io = load_file(str(FIXTURES / case / "io.safetensors"))
    cls = getattr(mega2bart.models.mega, meta["model_class"])
    model, info = cls.from_pretrained(FIXTURES / case, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    model.eval()
    diffs = {}
    for input_set, spec in meta["input_sets"].items():
        if input_set == "incremental":
            continue
        prefix = f"{input_set}."
        inputs = {k[len(prefix) :]: v for k, v in io.items() if k.startswith(prefix) and ".out." not in k}
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True, **spec.get("call_kwargs", {}))
        for key, expected in io.items():
            if not key.startswith(prefix + "out."):
                continue
            field, _, index = key[len(prefix + "out.") :].partition(".")
            actual = getattr(out, field)[int(index)] if index else getattr(out, field)
            assert actual.shape == expected.shape, f"{key}: {tuple(actual.shape)} != {tuple(expected.shape)}"
            diffs[key] = float((actual.double() - expected.double()).abs().max())
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= ATOL, f"{case}: {worst} differs from 4.57.1 by {diffs[worst]:.2e}"


def test_causal_incremental_steps_match_port() -> None:
    """Prefix 10 then two cached single-token steps reproduce the port's incremental logits."""
    io = load_file(str(FIXTURES / "head_causal" / "io.safetensors"))
    model = MegaForCausalLM.from_pretrained(FIXTURES / "head_causal").eval()
    ids = io["incremental.input_ids"]
    with torch.no_grad():
        out = model(ids[:, :10], use_cache=True)
        torch.testing.assert_close(out.logits, io["incremental.prefix.logits"], atol=ATOL, rtol=0)
        for step in range(2):
            out = model(ids[:, 10 + step : 11 + step], cache=out.cache, use_cache=True)
            torch.testing.assert_close(out.logits, io[f"incremental.step{step}.logits"], atol=ATOL, rtol=0)
    assert out.cache.get_seq_length() == 12


# ----------------------------------------------------------------------------------------------
# Auto classes, saving, tying


@pytest.mark.parametrize(
    ("auto_name", "cls"),
    [
        ("AutoModelForSequenceClassification", MegaForSequenceClassification),
        ("AutoModelForTokenClassification", MegaForTokenClassification),
        ("AutoModelForQuestionAnswering", MegaForQuestionAnswering),
        ("AutoModelForMultipleChoice", MegaForMultipleChoice),
        ("AutoModelForCausalLM", MegaForCausalLM),
    ],
)
def test_auto_classes_and_round_trip(auto_name: str, cls: type, tmp_path: Path) -> None:
    import transformers

    config = tiny_config(is_decoder=cls is MegaForCausalLM, bidirectional=cls is not MegaForCausalLM)
    model = getattr(transformers, auto_name).from_config(config)
    assert type(model) is cls
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    if cls is MegaForCausalLM:
        assert "lm_head.weight" not in saved, "the tied LM head is written like the port: not at all"
    reloaded, info = getattr(transformers, auto_name).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    if cls is MegaForCausalLM:
        assert reloaded.lm_head.weight.data_ptr() == reloaded.mega.embedding_layer.word_embeddings.weight.data_ptr()


# ----------------------------------------------------------------------------------------------
# losses and gradients


def test_head_losses_and_gradients() -> None:
    torch.manual_seed(0)
    ids = random_ids(2, 20)
    cases = [
        (MegaForSequenceClassification(tiny_config(num_labels=3)), {"labels": torch.tensor([0, 2])}),
        (MegaForSequenceClassification(tiny_config(num_labels=1)), {"labels": torch.tensor([0.5, -1.0])}),
        (
            MegaForTokenClassification(tiny_config(num_labels=4)),
            {"labels": torch.full((2, 20), -100).index_fill_(1, torch.tensor([3]), 1)},
        ),
        (
            MegaForQuestionAnswering(tiny_config()),
            {"start_positions": torch.tensor([1, 99]), "end_positions": torch.tensor([4, 99])},
        ),
    ]
    for model, labels in cases:
        out = model(ids, **labels)
        assert torch.isfinite(out.loss), type(model).__name__
        out.loss.backward()
        assert model.mega.embedding_layer.word_embeddings.weight.grad.abs().sum() > 0, type(model).__name__
    assert cases[1][0].config.problem_type == "regression"
    choices = MegaForMultipleChoice(tiny_config())
    out = choices(ids.view(1, 2, 20).expand(3, 2, 20), labels=torch.tensor([0, 1, 0]))
    assert out.logits.shape == (3, 2) and torch.isfinite(out.loss)


_HEAD_LABELS = {
    MegaForSequenceClassification: lambda: {"labels": torch.tensor([0, 1])},
    MegaForTokenClassification: lambda: {"labels": torch.full((2, 20), -100).index_fill_(1, torch.tensor([3]), 1)},
    MegaForQuestionAnswering: lambda: {"start_positions": torch.tensor([1, 2]), "end_positions": torch.tensor([4, 5])},
    MegaForMultipleChoice: lambda: {"labels": torch.tensor([0, 1])},
    MegaForMaskedLM: lambda: {"labels": random_ids(2, 20, seed=3)},
}


@pytest.mark.parametrize("use_pooler", [True, False, None])
@pytest.mark.parametrize("cls", list(_HEAD_LABELS), ids=lambda cls: cls.__name__)
def test_every_head_works_whatever_use_pooler_says(cls: type, use_pooler: bool | None, tmp_path: Path) -> None:
    """Each task head trains from a config with use_pooler True, False (a built model's encoder) or unset, and
    from a saved MegaModel without a pooler (what `get_encoder().save_pretrained` writes)."""
    overrides = {} if use_pooler is None else {"use_pooler": use_pooler}
    torch.manual_seed(0)
    MegaModel(tiny_config(**overrides)).save_pretrained(tmp_path)
    ids = random_ids(2, 20)
    if cls is MegaForMultipleChoice:
        ids = ids.view(2, 1, 20).expand(2, 3, 20)  # (batch, choices, length)
    for model in (cls(tiny_config(**overrides)), cls.from_pretrained(tmp_path)):
        out = model(ids, **_HEAD_LABELS[cls]())
        assert torch.isfinite(out.loss), type(model).__name__
        out.loss.backward()
        assert model.mega.embedding_layer.word_embeddings.weight.grad.abs().sum() > 0, type(model).__name__


def test_causal_loss_is_next_token_cross_entropy() -> None:
    model = _causal()
    ids = random_ids(2, 12)
    out = model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 128), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    assert out.cache is None, "labels switch caching off, as in the port"


# ----------------------------------------------------------------------------------------------
# incremental decoding


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # chunked (16), softmax, post-norm
        {"use_chunking": False, "chunk_size": -1, "normalize_before_mega": True},
        {"attention_activation": "laplace", "relative_positional_bias": "rotary"},
        {"attention_activation": "relu2", "use_chunking": False, "chunk_size": -1},
    ],
    ids=["chunked-softmax", "unchunked-prenorm", "chunked-laplace-rotary", "unchunked-relu2"],
)
@pytest.mark.parametrize("splits", [[5] + [1] * 35, [20, 3, 17], [33, 7], [16, 16, 8]], ids=str)
def test_cached_equals_uncached(overrides: dict, splits: list[int]) -> None:
    """Any split of 40 tokens into cached calls (crossing chunk boundaries) gives the one-call logits."""
    model = _causal(**overrides)
    ids = random_ids(2, 40, seed=3)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        pieces, cache, position = [], None, 0
        for size in splits:
            out = model(ids[:, position : position + size], cache=cache, use_cache=True)
            cache, position = out.cache, position + size
            pieces.append(out.logits)
    assert isinstance(cache, MegaCache) and cache.get_seq_length() == 40
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cached_step_with_attention_mask_over_past() -> None:
    """generate() passes a mask over past + new tokens; all-ones masks change nothing."""
    model = _causal()
    ids = random_ids(1, 9)
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :8], attention_mask=torch.ones(1, 8), use_cache=True)
        step = model(
            ids[:, 8:], attention_mask=torch.ones(1, 9), cache=out.cache, use_cache=True, output_attentions=True
        )
    torch.testing.assert_close(step.logits, full[:, 8:], atol=1e-5, rtol=1e-5)
    assert step.attentions[0].shape == (1, 1, 1, 9)


def test_generate_uses_cache_and_equals_greedy_uncached() -> None:
    model = _causal()
    prompt = random_ids(2, 6, seed=5)
    lengths: list[int] = []
    hook = model.mega.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append((args[0] if args else kwargs["input_ids"]).shape[1]),
        with_kwargs=True,
    )
    with torch.no_grad():
        generated = model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=1)
    hook.remove()
    assert lengths[0] == 6 and set(lengths[1:]) == {1}, f"generate did not decode incrementally: {lengths}"
    expected = prompt
    with torch.no_grad():
        for _ in range(5):
            next_token = model(expected, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            expected = torch.cat([expected, next_token], dim=1)
    assert torch.equal(generated, expected)


@pytest.mark.parametrize(
    "overrides",
    [dict(is_decoder=False), dict(is_decoder=False, bidirectional=False), dict(is_decoder=True, bidirectional=True)],
    ids=["encoder", "encoder-causal-ema", "bidirectional-decoder"],
)
def test_generate_without_a_cache_recomputes_the_whole_sequence(overrides: dict) -> None:
    """A MegaForCausalLM that cannot cache generates (default use_cache=True) like the full-recompute loop."""
    torch.manual_seed(0)
    # perturbed enough that the next token depends on the context, not only on the last token
    model = perturbed(MegaForCausalLM(tiny_config(**overrides)), scale=0.3).eval()
    prompt = random_ids(2, 8, seed=5)
    lengths: list[int] = []
    hook = model.mega.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append((args[0] if args else kwargs["input_ids"]).shape[1]),
        with_kwargs=True,
    )
    with torch.no_grad():
        generated = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5, do_sample=False, pad_token_id=1
        )
    hook.remove()
    assert lengths == [8, 9, 10, 11, 12], f"generate did not pass the whole sequence at each step: {lengths}"
    expected = last_token_only = prompt
    with torch.no_grad():
        for _ in range(5):
            next_token = model(expected, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            expected = torch.cat([expected, next_token], dim=1)
            next_token = model(last_token_only[:, -1:], use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            last_token_only = torch.cat([last_token_only, next_token], dim=1)
    assert not torch.equal(expected, last_token_only), (
        "the test model ignores the context: it cannot tell the two apart"
    )
    assert torch.equal(generated, expected), f"generate {generated.tolist()} != full recompute {expected.tolist()}"


def test_cache_errors() -> None:
    from transformers import DynamicCache

    bidirectional = MegaForCausalLM(tiny_config(is_decoder=True, bidirectional=True)).eval()
    assert bidirectional(random_ids(1, 4)).cache is None, "a bidirectional EMA does not cache by default"
    with pytest.raises(ValueError, match="bidirectional=False"):
        bidirectional(random_ids(1, 4), use_cache=True)
    model = _causal()
    with pytest.raises(TypeError, match="MegaCache"):
        model(random_ids(1, 4), cache=DynamicCache(), use_cache=True)
    out = model(random_ids(1, 4), use_cache=True)
    with pytest.raises(ValueError, match="attention_mask covers 3 tokens"):
        model(random_ids(1, 1), attention_mask=torch.ones(1, 3), cache=out.cache, use_cache=True)
    with pytest.raises(NotImplementedError, match="cropped"):
        out.cache.crop(1)


def test_cache_reorder_for_beams() -> None:
    model = _causal()
    ids = random_ids(2, 7)
    with torch.no_grad():
        cache = model(ids[:, :6], use_cache=True).cache
        cache.reorder_cache(torch.tensor([1, 0]))
        step = model(ids.flip(0)[:, 6:], cache=cache, use_cache=True).logits
        full = model(ids.flip(0)).logits[:, 6:]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)


def test_encoder_never_caches() -> None:
    config = MegaConfig(**{**tiny_config().to_dict(), "is_decoder": False})
    model = MegaForSequenceClassification(config).eval()
    assert model.mega(random_ids(1, 5), use_cache=True).cache is None


# ----------------------------------------------------------------------------------------------
# MEGA as a decoder with its own gated cross-attention (add_cross_attention=True)

CROSS_CASES = ["cross_causal_simple_softmax", "cross_model_chunked_rotary_laplace_prenorm"]


def _load_cross(case: str) -> tuple[torch.nn.Module, dict, dict[str, torch.Tensor]]:
    meta = json.loads((FIXTURES / case / "meta.json").read_text())
    io = load_file(str(FIXTURES / case / "io.safetensors"))
    cls = getattr(mega2bart.models.mega, meta["model_class"])
    extra = {"add_pooling_layer": False} if meta["model_class"] == "MegaModel" else {}
    model, info = cls.from_pretrained(FIXTURES / case, output_loading_info=True, **extra)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval(), meta, io


@pytest.mark.parametrize("case", CROSS_CASES)
@pytest.mark.parametrize("input_set", ["masked", "unmasked"])
def test_cross_attention_parity_with_port(case: str, input_set: str) -> None:
    """The port's decoder with cross-attention loads with every key and matches every output (cross weights too)."""
    model, meta, io = _load_cross(case)
    prefix = f"{input_set}."
    inputs = {k[len(prefix) :]: v for k, v in io.items() if k.startswith(prefix) and ".out." not in k}
    with torch.no_grad():
        out = model(**inputs, use_cache=False, output_hidden_states=True, output_attentions=True)
    diffs = {}
    for key, expected in io.items():
        if not key.startswith(prefix + "out."):
            continue
        field, _, index = key[len(prefix + "out.") :].partition(".")
        actual = getattr(out, field)[int(index)] if index else getattr(out, field)
        assert actual.shape == expected.shape, f"{key}: {tuple(actual.shape)} != {tuple(expected.shape)}"
        diffs[key] = float((actual.double() - expected.double()).abs().max())
    assert any(".cross_attentions." in key for key in diffs), sorted(diffs)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= ATOL, f"{case}/{input_set}: {worst} differs from 4.57.1 by {diffs[worst]:.2e}"


def _cross_decoder(**overrides) -> MegaForCausalLM:
    torch.manual_seed(0)
    config = tiny_config(is_decoder=True, bidirectional=False, add_cross_attention=True, **overrides)
    return perturbed(MegaForCausalLM(config)).eval()


@pytest.mark.parametrize(
    "overrides",
    [
        dict(use_chunking=True, chunk_size=16, relative_positional_bias="rotary"),
        dict(use_chunking=False, chunk_size=-1, attention_activation="laplace"),
    ],
    ids=["chunked_rotary_softmax", "unchunked_simple_laplace"],
)
def test_cross_attention_cached_equals_uncached(overrides: dict) -> None:
    """Token-by-token and uneven cached pieces give the uncached logits; the encoder is projected once."""
    model = _cross_decoder(**overrides)
    ids = random_ids(2, 37)
    states = torch.randn(2, 23, 32, generator=torch.Generator().manual_seed(3))
    source_mask = torch.ones(2, 23, dtype=torch.long)
    source_mask[1, 15:] = 0
    mask = torch.ones_like(ids)
    mask[1, -5:] = 0
    call = dict(encoder_hidden_states=states, encoder_attention_mask=source_mask)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, use_cache=False, **call).logits  # (B, T, V)
        for pieces in ([1] * ids.shape[1], [5, 14, 1, 1, 9, ids.shape[1] - 30]):
            cache, logits, start = None, [], 0
            for size in pieces:
                end = start + size
                out = model(ids[:, start:end], attention_mask=mask[:, :end], cache=cache, use_cache=True, **call)
                cache, start = out.cache, end
                logits.append(out.logits)
            cached = torch.cat(logits, dim=1)
            real = mask.bool()
            diff = float((cached - full)[real].abs().max())
            assert diff <= ATOL, f"pieces {pieces}: cached logits differ from uncached by {diff:.2e}"
            assert all(k is not None for k in cache.cross_keys) and cache.cross_keep is not None


def test_cross_attention_cache_reorders_for_beams() -> None:
    """Beam reordering and batch expansion move the cached encoder projections with the rows."""
    model = _cross_decoder(use_chunking=False, chunk_size=-1)
    states = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = model(random_ids(2, 3), encoder_hidden_states=states, use_cache=True)
    cache = out.cache
    keys = cache.cross_keys[0].clone()
    cache.reorder_cache(torch.tensor([1, 0]))
    assert torch.equal(cache.cross_keys[0], keys.flip(0))


def test_cross_attention_gradient_checkpointing() -> None:
    """Checkpointed blocks give the same loss and gradients (encoder states included) as plain ones."""
    ids = random_ids(2, 32)
    states = torch.randn(2, 20, 32, generator=torch.Generator().manual_seed(5))
    results = []
    for checkpointing in (False, True):
        model = _cross_decoder(use_chunking=True, chunk_size=16, relative_positional_bias="rotary").train()
        if checkpointing:
            model.activation_checkpointing_enable()
        source = states.clone().requires_grad_(True)
        loss = model(ids, labels=ids, encoder_hidden_states=source).loss
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads, source.grad.clone()))
    (loss0, grads0, src0), (loss1, grads1, src1) = results
    assert any("cross_attn" in name for name in grads0)
    assert set(grads0) == set(grads1)
    torch.testing.assert_close(loss1, loss0, atol=1e-6, rtol=0)
    torch.testing.assert_close(src1, src0, atol=1e-6, rtol=1e-5)
    for name in grads0:
        torch.testing.assert_close(
            grads1[name], grads0[name], atol=1e-6, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}"
        )


def test_cross_attention_errors() -> None:
    with pytest.raises(ValueError, match="needs is_decoder=True"):
        mega2bart.models.mega.MegaModel(tiny_config(add_cross_attention=True))
    model = _cross_decoder(use_chunking=True, chunk_size=16)  # simple bias: range 16
    with pytest.raises(ValueError, match="no encoder_hidden_states"):
        model(random_ids(1, 4))
    with pytest.raises(ValueError, match="simple relative bias range 16"):
        model(random_ids(1, 4), encoder_hidden_states=torch.zeros(1, 17, 32))


def test_cross_attention_sdpa_equals_eager_and_reaches_composite() -> None:
    """set_attn_implementation on a MEGA-to-MEGA Mega2BartModel reaches both sides; sdpa == eager, masks included."""
    from mega2bart.modeling_mega2bart import Mega2BartModel
    from mega2bart.models.mega import MegaModel

    torch.manual_seed(0)
    encoder = perturbed(MegaModel(tiny_config(), add_pooling_layer=False))
    decoder = _cross_decoder(use_chunking=True, chunk_size=16, relative_positional_bias="rotary")
    model = Mega2BartModel(encoder=encoder, decoder=decoder).eval()
    model.config.decoder_start_token_id, model.config.pad_token_id = 2, 1
    ids, labels = random_ids(2, 40), random_ids(2, 20, seed=1)
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    logits, calls = {}, {}
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for implementation in ("eager", "sdpa"):
        model.set_attn_implementation(implementation)
        assert model.encoder.config._attn_implementation == implementation
        assert model.decoder.config._attn_implementation == implementation
        with mock.patch("torch.nn.functional.scaled_dot_product_attention", wraps=sdpa) as spy, torch.no_grad():
            logits[implementation] = model(input_ids=ids, attention_mask=mask, labels=labels).logits
        calls[implementation] = [tuple(call.args[2].shape) for call in spy.call_args_list]
    assert calls["eager"] == []
    assert (2, 1, 40, 32) in calls["sdpa"], calls["sdpa"]  # the decoder's cross-attention values (B, 1, S, H)
    torch.testing.assert_close(logits["sdpa"], logits["eager"], atol=1e-5, rtol=1e-5)
