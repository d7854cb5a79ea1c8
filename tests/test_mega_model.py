"""Behaviour of the native MEGA: lengths, masks, gradients, checkpointing, loading, config errors."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from mega_tiny import perturbed, random_ids, tiny_config

from mega2bart.models.mega import MegaConfig, MegaForMaskedLM, MegaModel


@pytest.fixture(scope="module")
def model() -> MegaModel:
    torch.manual_seed(0)
    return perturbed(MegaModel(tiny_config(), add_pooling_layer=False)).eval()


@pytest.mark.parametrize("length", [5, 16, 20, 33, 47, 64])
def test_any_length_equals_explicit_padding(model: MegaModel, length: int) -> None:
    """Lengths that are not a multiple of chunk_size (16) work and equal the padded reference."""
    ids = random_ids(2, length)
    out = model(ids).last_hidden_state
    assert out.shape == (2, length, 32)
    padded_length = length if length <= 16 else -(-length // 16) * 16
    padded = torch.ones(2, padded_length, dtype=torch.long)
    padded[:, :length] = ids
    mask = torch.zeros(2, padded_length, dtype=torch.long)
    mask[:, :length] = 1
    reference = model(padded, attention_mask=mask).last_hidden_state[:, :length]
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=1e-6)


def test_right_padding_invariance(model: MegaModel) -> None:
    ids = random_ids(1, 24)
    alone = model(ids).last_hidden_state
    for total in (32, 48):
        padded = torch.ones(1, total, dtype=torch.long)
        padded[:, :24] = ids
        mask = (torch.arange(total) < 24).long()[None]
        torch.testing.assert_close(
            model(padded, attention_mask=mask).last_hidden_state[:, :24], alone, atol=1e-6, rtol=1e-6
        )


def test_left_padding_within_one_chunk_is_invariant(model: MegaModel) -> None:
    ids = random_ids(1, 10)
    padded = torch.cat([torch.ones(1, 4, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 10, dtype=torch.long)], dim=1)
    torch.testing.assert_close(
        model(padded, attention_mask=mask).last_hidden_state[:, 4:], model(ids).last_hidden_state, atol=1e-6, rtol=1e-6
    )


def test_bool_int_float_masks_agree(model: MegaModel) -> None:
    ids = random_ids(2, 40)
    keep = torch.ones(2, 40, dtype=torch.bool)
    keep[1, 25:] = False
    outs = [
        model(ids, attention_mask=keep.to(dtype)).last_hidden_state for dtype in (torch.bool, torch.long, torch.float32)
    ]
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
    torch.testing.assert_close(outs[0], outs[2], atol=0, rtol=0)


def test_all_padding_chunk_is_finite(model: MegaModel) -> None:
    ids = random_ids(2, 48)
    mask = torch.ones(2, 48)
    mask[1, 30:] = 0  # chunk 2 of row 1 is all padding
    out = model(ids, attention_mask=mask, output_attentions=True)
    assert torch.isfinite(out.last_hidden_state).all()
    assert out.attentions[0].shape == (2, 3, 16, 16)
    assert torch.isfinite(out.attentions[0]).all()


def test_bad_mask_shape_is_explained(model: MegaModel) -> None:
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 7\)"):
        model(random_ids(2, 8), attention_mask=torch.ones(2, 7))


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_path_equals_explicit_softmax(model: MegaModel, causal: bool, monkeypatch) -> None:
    """attn_implementation "sdpa" and "eager" (explicit matmuls) agree, padding included (SDPA run on the CPU)."""
    from mega2bart.models.mega import modeling_mega

    monkeypatch.setattr(modeling_mega, "EXPLICIT_ON_CPU", False)
    ids = random_ids(2, 48)
    mask = torch.ones(2, 48)
    mask[1, 37:] = 0
    mask[0, 30:] = 0  # row 0: its last chunk is all padding
    model.config.is_decoder = causal
    try:
        model.set_attn_implementation("eager")
        explicit = model(ids, attention_mask=mask).last_hidden_state
        model.set_attn_implementation("sdpa")
        assert model.config._attn_implementation == "sdpa"
        fast = model(ids, attention_mask=mask).last_hidden_state
    finally:
        model.config.is_decoder = False
        model.set_attn_implementation("eager")
    assert torch.isfinite(explicit).all()
    torch.testing.assert_close(fast, explicit, atol=1e-6, rtol=1e-6)


def test_attn_implementation_at_load_time_and_default(tmp_path, monkeypatch) -> None:
    """As any transformers model that supports SDPA: "sdpa" by default, from_pretrained(attn_implementation=...)
    honoured, an unsupported value refused by transformers' own check. On the CPU "sdpa" runs the explicit
    matmuls (faster there) unless EXPLICIT_ON_CPU is off; every path gives the same numbers."""
    from mega2bart.models.mega import modeling_mega

    torch.manual_seed(0)
    saved = perturbed(MegaModel(tiny_config(), add_pooling_layer=False)).eval()
    assert saved.config._attn_implementation == "sdpa"
    saved.save_pretrained(tmp_path)
    assert MegaModel.from_pretrained(tmp_path).config._attn_implementation == "sdpa"
    ids = random_ids(2, 40)
    outputs, calls = {}, {}
    for implementation, explicit_on_cpu in (("eager", False), ("sdpa", False), ("sdpa", True)):
        monkeypatch.setattr(modeling_mega, "EXPLICIT_ON_CPU", explicit_on_cpu)
        loaded = MegaModel.from_pretrained(tmp_path, attn_implementation=implementation, add_pooling_layer=False).eval()
        assert loaded.config._attn_implementation == implementation
        sdpa = torch.nn.functional.scaled_dot_product_attention
        key = (implementation, explicit_on_cpu)
        with mock.patch("torch.nn.functional.scaled_dot_product_attention", wraps=sdpa) as spy, torch.no_grad():
            outputs[key] = loaded(ids).last_hidden_state
        calls[key] = spy.call_count
    # one SDPA call per layer, only when asked for and not replaced by the CPU's faster explicit path
    assert calls == {("eager", False): 0, ("sdpa", False): 2, ("sdpa", True): 0}, calls
    for key in (("sdpa", False), ("sdpa", True)):
        torch.testing.assert_close(outputs[key], outputs[("eager", False)], atol=1e-6, rtol=1e-6)
    for unsupported in ("flex_attention", "bogus"):
        with pytest.raises(ValueError, match="does not support|is not supported"):
            MegaModel.from_pretrained(tmp_path, attn_implementation=unsupported)


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    config = tiny_config(dropout_prob=0.1, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    model = perturbed(MegaForMaskedLM(config)).train()
    ids = random_ids(2, 40)
    token_types = torch.zeros_like(ids)
    token_types[:, 20:] = 1
    loss = model(ids, token_type_ids=token_types, labels=ids).loss
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = perturbed(MegaForMaskedLM(tiny_config())).train()
    ids = random_ids(2, 40)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = grads()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert all(layer.gradient_checkpointing for layer in model.mega.layers)
    checkpointed = grads()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_gradient_checkpointing_reaches_mega_inside_encoder_decoder() -> None:
    from transformers import BartConfig, BartForCausalLM, EncoderDecoderModel

    torch.manual_seed(0)
    encoder = MegaModel(tiny_config())
    decoder = BartForCausalLM(
        BartConfig(
            vocab_size=128,
            d_model=24,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            is_decoder=True,
            add_cross_attention=True,
            max_position_embeddings=64,
        )
    )
    composite = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    composite.config.decoder_start_token_id = 2
    composite.config.pad_token_id = 1
    composite.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert all(layer.gradient_checkpointing for layer in composite.encoder.layers)
    composite.train()
    ids = random_ids(2, 37)
    labels = random_ids(2, 6, seed=1)
    composite(input_ids=ids, labels=labels).loss.backward()
    assert composite.encoder.layers[0].mega_layer.ema_gate.damping_factor.grad.abs().sum() > 0


def test_no_stale_kernel_after_weights_change(model: MegaModel) -> None:
    """4.x cached the EMA kernel in eval mode, so loading new weights gave stale outputs (docs/mega.md#port-quirks)."""
    ids = random_ids(1, 32)
    torch.manual_seed(5)
    other = perturbed(MegaModel(tiny_config(), add_pooling_layer=False), seed=7).eval()
    fresh = other(ids).last_hidden_state
    reused = MegaModel(tiny_config(), add_pooling_layer=False).eval()
    reused.load_state_dict(model.state_dict())
    reused(ids)  # run once with the first weights
    reused.load_state_dict(other.state_dict())
    torch.testing.assert_close(reused(ids).last_hidden_state, fresh, atol=0, rtol=0)


def test_mlm_checkpoint_loads_into_mega_model(tmp_path, caplog) -> None:
    torch.manual_seed(0)
    mlm = perturbed(MegaForMaskedLM(tiny_config())).eval()
    mlm.save_pretrained(tmp_path)
    assert mlm.mega.embedding_layer.word_embeddings.weight.data_ptr() == mlm.mlm_head.weight.data_ptr()
    reloaded = MegaForMaskedLM.from_pretrained(tmp_path).eval()
    ids = random_ids(2, 20)
    torch.testing.assert_close(reloaded(ids).logits, mlm(ids).logits, atol=0, rtol=0)
    assert reloaded.mlm_head.weight.data_ptr() == reloaded.mega.embedding_layer.word_embeddings.weight.data_ptr()
    encoder, info = MegaModel.from_pretrained(tmp_path, add_pooling_layer=False, output_loading_info=True)
    assert info["missing_keys"] == set() or info["missing_keys"] == []
    torch.testing.assert_close(encoder.eval()(ids).last_hidden_state, mlm.mega(ids).last_hidden_state, atol=0, rtol=0)
    with_pooler, info = MegaModel.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["pooler.dense.bias", "pooler.dense.weight"]


@pytest.mark.parametrize("legacy", [True, False])
def test_rmsnorm_decision(legacy: bool) -> None:
    """4.x rmsnorm returns x * weight (normalisation discarded); legacy_rmsnorm=False normalises."""
    from mega2bart.models.mega.modeling_mega import MegaSequenceNorm

    norm = MegaSequenceNorm(tiny_config(normalization_type="rmsnorm", legacy_rmsnorm=legacy))
    with torch.no_grad():
        norm.norm.weight.copy_(torch.linspace(0.5, 2.0, 32))
    x = 3.0 * torch.randn(2, 5, 32)
    expected = (
        x * norm.norm.weight if legacy else x / x.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt() * norm.norm.weight
    )
    torch.testing.assert_close(norm(x), expected)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"normalization_type": "groupnorm"}, r"normalization_type \('groupnorm'\) must be one of"),
        ({"attention_activation": "gelu"}, r"attention_activation \('gelu'\) must be one of"),
        ({"use_chunking": True, "chunk_size": -1}, r"chunk_size \(-1\) must be a positive integer"),
        ({"hidden_size": 0}, r"hidden_size \(0\) must be a positive integer"),
        ({"dropout_prob": 1.5}, r"dropout_prob \(1.5\) must be in"),
        ({"relative_positional_bias": "alibi"}, r"relative_positional_bias \('alibi'\)"),
    ],
)
def test_config_validation_names_field_and_value(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_simple_bias_length_limit_without_chunking() -> None:
    model = MegaModel(tiny_config(use_chunking=False, chunk_size=16)).eval()
    assert model(random_ids(1, 16)).last_hidden_state.shape == (1, 16, 32)
    with pytest.raises(ValueError, match="exceeds the simple relative bias range 16"):
        model(random_ids(1, 17))


def test_config_round_trips_through_json(tmp_path) -> None:
    config = tiny_config(truncation=9, legacy_rmsnorm=False)
    config.save_pretrained(tmp_path)
    again = MegaConfig.from_pretrained(tmp_path)
    assert again.truncation == 9 and again.legacy_rmsnorm is False and again.chunk_size == 16


def test_add_pooling_layer_follows_the_config_unless_given(tmp_path) -> None:
    assert MegaModel(tiny_config()).pooler is not None  # the 4.x default
    assert MegaModel(tiny_config(use_pooler=False)).pooler is None
    assert MegaModel(tiny_config(use_pooler=False), add_pooling_layer=True).pooler is not None
    # the 4.x argument still reaches __init__ through from_pretrained (no config key of that name)
    MegaModel(tiny_config()).save_pretrained(tmp_path)
    assert MegaModel.from_pretrained(tmp_path, add_pooling_layer=False).pooler is None


@pytest.mark.parametrize("length", [1, 7, 16])
def test_simple_relative_bias_indexing(length: int) -> None:
    """B[i, j] = w[C - 1 + j - i] around chunk_size C (16), not max_positions (docs/mega.md#gated-attention)."""
    from mega2bart.models.mega.modeling_mega import MegaSimpleRelativePositionalBias

    module = MegaSimpleRelativePositionalBias(tiny_config())
    with torch.no_grad():
        module.rel_pos_bias.copy_(torch.arange(127, dtype=torch.float32))  # w[k] = k
    bias = module(length)
    expected = torch.tensor([[15 + j - i for j in range(length)] for i in range(length)], dtype=torch.float32)
    torch.testing.assert_close(bias, expected, atol=0, rtol=0)
    with pytest.raises(ValueError, match="exceeds the simple relative bias range 16"):
        module(17)


@pytest.mark.parametrize("activation", ["silu", "gelu"])
def test_inference_path_equals_autograd_path(activation: str) -> None:
    """Without autograd the layers apply activations and gates in place; the numbers agree to rounding."""
    torch.manual_seed(0)
    model = perturbed(MegaModel(tiny_config(activation=activation))).eval()
    ids = random_ids(2, 40)
    mask = torch.ones(2, 40)
    mask[1, 29:] = 0
    with_grad = model(ids, attention_mask=mask, output_hidden_states=True)
    with torch.inference_mode():
        without = model(ids, attention_mask=mask, output_hidden_states=True)
    for a, b in zip(with_grad.hidden_states, without.hidden_states, strict=True):
        torch.testing.assert_close(b, a.detach(), atol=2e-6, rtol=1e-5)
