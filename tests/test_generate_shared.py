"""Shared-encoder generation (`Mega2BartModel.generate`) gives the stock path's tokens and scores.

The stock path is `transformers.EncoderDecoderModel.generate(model, ...)` on the same object (it
never shares: the sharing hooks are only switched on by `Mega2BartModel.generate`). Everything is
float32 on CPU. Scores may differ by rounding only: the shared path attends with the beams folded
into the query length, (B, heads, k*T, d) instead of (B*k, heads, T, d), which can change the
kernel's blocking and so the summation order; log-probabilities of magnitude <= ~20 after sums over
<= 4,096 terms stay well within rtol = atol = 1e-5 (float32 eps is 1.2e-7).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import BartConfig, BartForCausalLM, EncoderDecoderModel

from mega2bart.modeling_mega2bart import (
    SMALL_BATCH_ROWS,
    BeamFoldingCrossAttention,
    Mega2BartModel,
    SharedCrossAttentionCache,
    _weight_major_linear,
)
from mega2bart.models.mega import MegaConfig, MegaModel
from mega2bart.presets import BART_LARGE_DECODER, SEED_ENCODER

SCORE_TOLERANCE = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_model(tiny_mega2bart_dir) -> Mega2BartModel:
    model = Mega2BartModel.from_pretrained(tiny_mega2bart_dir).eval()
    assert model.generation_config.forced_eos_token_id == 2  # the saved generation config applies
    return model


def _padded_batch(lengths: tuple[int, ...], vocab: int = 50000, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded <s> ... </s> inputs of the given lengths (pad id 1) and their attention mask."""
    generator = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    input_ids = torch.ones(len(lengths), longest, dtype=torch.long)
    attention_mask = torch.zeros(len(lengths), longest, dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.cat(
            [torch.tensor([0]), torch.randint(4, vocab, (length - 2,), generator=generator), torch.tensor([2])]
        )
        attention_mask[row, :length] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _both(model: Mega2BartModel, seed: int | None = None, **kwargs):
    """(shared, stock) outputs of the same generate call; `seed` re-seeds torch before each (sampling)."""
    kwargs.setdefault("min_new_tokens", 1)  # the saved generation config asks for 32
    outputs = []
    for generate in (Mega2BartModel.generate, EncoderDecoderModel.generate):
        if seed is not None:
            torch.manual_seed(seed)
        outputs.append(generate(model, **kwargs))
    return outputs


def _assert_same(shared, stock) -> None:
    if torch.is_tensor(shared):
        assert shared.tolist() == stock.tolist()
        return
    assert shared.sequences.tolist() == stock.sequences.tolist()
    if getattr(stock, "sequences_scores", None) is not None:
        torch.testing.assert_close(shared.sequences_scores, stock.sequences_scores, **SCORE_TOLERANCE)
    if stock.scores is not None:
        assert len(shared.scores) == len(stock.scores)
        for step, (ours, theirs) in enumerate(zip(shared.scores, stock.scores, strict=True)):
            finite = torch.isfinite(theirs)
            assert torch.equal(finite, torch.isfinite(ours)), f"step {step}: different -inf pattern"
            torch.testing.assert_close(
                ours[finite], theirs[finite], **SCORE_TOLERANCE, msg=lambda m, step=step: f"step {step}: {m}"
            )


SCORED = dict(return_dict_in_generate=True, output_scores=True)


def test_greedy_matches_stock(tiny_model) -> None:
    batch = _padded_batch((150, 40, 97))
    _assert_same(*_both(tiny_model, **batch, num_beams=1, do_sample=False, max_new_tokens=10, **SCORED))


@pytest.mark.parametrize(
    "options",
    [
        dict(num_beams=4, length_penalty=0.6, early_stopping=True),
        dict(num_beams=4, length_penalty=2.0, early_stopping=False),
        dict(num_beams=3, length_penalty=1.5, early_stopping="never", no_repeat_ngram_size=2, num_return_sequences=3),
        dict(num_beams=5, length_penalty=1.0, no_repeat_ngram_size=3, num_return_sequences=2, min_new_tokens=6),
    ],
    ids=["lp0.6-early", "lp2-not-early", "ngram2-return3-never", "ngram3-return2-min6"],
)
def test_beam_search_matches_stock(tiny_model, options) -> None:
    batch = _padded_batch((150, 40, 97), seed=1)
    shared, stock = _both(tiny_model, **batch, max_new_tokens=10, **options, **SCORED)
    assert shared.sequences.shape[0] == 3 * options.get("num_return_sequences", 1)
    _assert_same(shared, stock)


def test_sampling_matches_stock(tiny_model) -> None:
    batch = _padded_batch((120, 33), seed=2)
    options = dict(do_sample=True, num_return_sequences=3, top_k=50, temperature=1.3, max_new_tokens=10, **SCORED)
    shared, stock = _both(tiny_model, seed=7, **batch, **options)
    assert shared.sequences.shape[0] == 6
    _assert_same(shared, stock)


def test_beam_sampling_matches_stock(tiny_model) -> None:
    batch = _padded_batch((120, 33), seed=3)
    options = dict(do_sample=True, num_beams=3, num_return_sequences=2, temperature=1.5, max_new_tokens=10, **SCORED)
    _assert_same(*_both(tiny_model, seed=11, **batch, **options))


def test_precomputed_encoder_outputs_give_the_same_beams(tiny_model) -> None:
    """`generate(encoder_outputs=...)` (B rows) is accepted and equals generating from the input ids."""
    from transformers.modeling_outputs import BaseModelOutput

    batch = _padded_batch((100, 60), seed=9)
    with torch.no_grad():
        states = tiny_model.encoder(**batch).last_hidden_state  # (B, S, D_enc)
    options = dict(num_beams=3, max_new_tokens=6, min_new_tokens=1)
    expected = EncoderDecoderModel.generate(tiny_model, **batch, **options)
    for share_encoder in (True, False):
        encoder_outputs = BaseModelOutput(last_hidden_state=states)
        generated = tiny_model.generate(
            encoder_outputs=encoder_outputs,
            attention_mask=batch["attention_mask"],
            share_encoder=share_encoder,
            **options,
        )
        assert generated.tolist() == expected.tolist(), share_encoder


def test_cross_attentions_match_stock_unfolded(tiny_model) -> None:
    """With eager attention and output_attentions, the folded weights come back as (B*k, heads, T, S)."""
    tiny_model.set_attn_implementation("eager")
    try:
        batch = _padded_batch((90, 64), seed=4)
        options = dict(num_beams=3, max_new_tokens=5, output_attentions=True, return_dict_in_generate=True)
        shared, stock = _both(tiny_model, **batch, **options)
    finally:
        tiny_model.set_attn_implementation("sdpa")
    assert shared.sequences.tolist() == stock.sequences.tolist()
    assert len(shared.cross_attentions) == len(stock.cross_attentions) == 5
    for step, (ours, theirs) in enumerate(zip(shared.cross_attentions, stock.cross_attentions, strict=True)):
        for layer, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert a.shape == b.shape == (6, 4, 1, 90), (step, layer, a.shape, b.shape)
            torch.testing.assert_close(
                a, b, **SCORE_TOLERANCE, msg=lambda m, step=step, layer=layer: f"step {step} layer {layer}: {m}"
            )


def _record_generation(model: Mega2BartModel, **kwargs) -> tuple[list[int], list[dict]]:
    """Run generate, recording the encoder's batch sizes and, per decoder step, the cache's layer-0 tensors."""
    encoder_batches, steps = [], []

    def on_encoder(module, args, kwargs_, output):
        encoder_batches.append(output.last_hidden_state.shape[0])

    def on_decoder(module, args, kwargs_):
        cache = kwargs_.get("cache")
        if cache is not None and cache.cross_attention_cache.get_seq_length(0) > 0:
            cross = cache.cross_attention_cache.layers[0]
            steps.append(
                {
                    "cache": type(cache),
                    "cross_keys": cross.keys.shape,
                    "cross_pointers": (cross.keys.data_ptr(), cross.values.data_ptr()),
                    "self_keys": cache.self_attention_cache.layers[0].keys.shape,
                }
            )

    handles = [
        model.encoder.register_forward_hook(on_encoder, with_kwargs=True),
        model.decoder.register_forward_pre_hook(on_decoder, with_kwargs=True),
    ]
    try:
        model.generate(**kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return encoder_batches, steps


def test_encoder_side_is_computed_and_stored_once_per_input(tiny_model) -> None:
    batch = _padded_batch((150, 40), seed=5)
    options = dict(num_beams=4, max_new_tokens=8, min_new_tokens=8)
    encoder_batches, steps = _record_generation(tiny_model, **batch, **options)
    assert encoder_batches == [2]
    assert len(steps) == 7  # steps 2..8 read the cross-attention cache filled at step 1
    assert {step["cache"] for step in steps} == {SharedCrossAttentionCache}
    heads, head_dim = 4, 16
    assert {step["cross_keys"] for step in steps} == {torch.Size([2, heads, 150, head_dim])}  # B, not B*k
    assert {step["self_keys"][0] for step in steps} == {8}  # the self-attention cache is per beam
    assert len({step["cross_pointers"] for step in steps}) == 1  # never copied by the beam reorder

    # the stock path stores one copy per beam: switched off for one call, or on the model
    stock_runs = [_record_generation(tiny_model, **batch, **options, share_encoder=False)]
    tiny_model.share_encoder = False
    try:
        stock_runs.append(_record_generation(tiny_model, **batch, **options))
    finally:
        tiny_model.share_encoder = True
    for encoder_batches, steps in stock_runs:
        assert encoder_batches == [2]
        assert {step["cache"].__name__ for step in steps} == {"EncoderDecoderCache"}
        assert {step["cross_keys"] for step in steps} == {torch.Size([8, heads, 150, head_dim])}
        # each reorder index-selects a new tensor while the old one is alive, so consecutive steps differ
        # (a freed block may come back later, so pointers are not compared across non-adjacent steps)
        pointers = [step["cross_pointers"] for step in steps]
        assert len(pointers) == 7 and all(before != after for before, after in itertools.pairwise(pointers))


def test_encoder_projection_runs_once_per_generate(tiny_model) -> None:
    """enc_to_dec_proj (tiny: 32 -> 64) is computed once per sharing generate, at every step on the stock path."""
    batch = _padded_batch((150, 40), seed=6)
    options = dict(num_beams=4, max_new_tokens=6, min_new_tokens=6)
    projection = tiny_model.enc_to_dec_proj
    computed = []
    original = torch.nn.Linear.forward

    def counting(module, hidden_states):
        if module is projection:
            computed.append(tuple(hidden_states.shape))
        return original(module, hidden_states)

    torch.nn.Linear.forward = counting
    try:
        shared = tiny_model.generate(**batch, **options)
        shared_calls, computed[:] = list(computed), []
        stock = tiny_model.generate(**batch, **options, share_encoder=False)
        stock_calls = list(computed)
    finally:
        torch.nn.Linear.forward = original
    assert shared_calls == [(2, 150, 32)], shared_calls  # one input batch, projected once
    assert len(stock_calls) == 6 and set(stock_calls) == {(8, 150, 32)}, stock_calls  # per step, per beam
    assert torch.equal(shared, stock)
    assert "forward" not in vars(projection)  # the per-call override is gone after generate


@pytest.mark.parametrize("bias", [True, False])
def test_weight_major_linear_equals_linear(bias: bool) -> None:
    """(W x^T)^T is x W^T: float32 rounding apart for few rows; F.linear itself (bit-equal) for the rest."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 200, bias=bias)
    forward = _weight_major_linear(linear)
    for shape in [(1, 96), (4, 1, 96), (2, 3, 96), (SMALL_BATCH_ROWS, 96)]:
        x = torch.randn(*shape)
        out = forward(x)
        assert out.shape == (*shape[:-1], 200) and out.is_contiguous()
        # sums of 96 products of magnitude <~ 0.3: float32 rounding stays far below 1e-5
        torch.testing.assert_close(out, torch.nn.functional.linear(x, linear.weight, linear.bias), rtol=1e-5, atol=1e-5)
        exact = torch.nn.functional.linear(
            x.double(), linear.weight.double(), None if linear.bias is None else linear.bias.double()
        )
        assert (out.double() - exact).abs().max() < 1e-5
    many = torch.randn(SMALL_BATCH_ROWS + 1, 96)
    assert torch.equal(forward(many), torch.nn.functional.linear(many, linear.weight, linear.bias))
    half = linear.to(torch.bfloat16)
    x = torch.randn(4, 96, dtype=torch.bfloat16)
    assert torch.equal(_weight_major_linear(half)(x), torch.nn.functional.linear(x, half.weight, half.bias))


def test_decoder_linears_are_weight_major_only_inside_a_sharing_generate(tiny_model) -> None:
    batch = _padded_batch((60,), seed=7)
    decoder_linears = [m for m in tiny_model.decoder.modules() if type(m) is torch.nn.Linear]
    assert decoder_linears and tiny_model.decoder.lm_head in decoder_linears
    seen = []

    def record(*_):
        seen.append([("forward" in vars(m)) for m in decoder_linears])

    handle = tiny_model.decoder.register_forward_pre_hook(record)
    try:
        tiny_model.generate(**batch, num_beams=2, max_new_tokens=3, min_new_tokens=3)
        shared_steps, seen[:] = list(seen), []
        tiny_model.generate(**batch, num_beams=2, max_new_tokens=3, min_new_tokens=3, share_encoder=False)
        stock_steps = list(seen)
    finally:
        handle.remove()
    assert len(shared_steps) == 3 and all(all(step) for step in shared_steps)
    assert len(stock_steps) == 3 and not any(any(step) for step in stock_steps)  # the stock path is untouched
    assert not any("forward" in vars(m) for m in decoder_linears)  # restored after generate
    with pytest.raises(ValueError):
        tiny_model.generate(**batch, num_beams=2, max_new_tokens=3, min_new_tokens=3, num_return_sequences=3)
    assert not any("forward" in vars(m) for m in decoder_linears)  # and after a failing one


def test_sharing_falls_back_to_stock_where_it_cannot_apply(tiny_model) -> None:
    from transformers import DynamicCache, EncoderDecoderCache

    batch = _padded_batch((70,), seed=6)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())  # a user cache is reordered as a whole
    shared = tiny_model.generate(**batch, num_beams=2, max_new_tokens=4, cache=cache)
    stock = EncoderDecoderModel.generate(tiny_model, **batch, num_beams=2, max_new_tokens=4)
    assert shared.tolist() == stock.tolist()
    assert cache.cross_attention_cache.layers[0].keys.shape[0] == 2


def test_cross_attention_is_bart_attention_with_the_same_weights(tiny_model) -> None:
    layers = tiny_model.decoder.model.decoder.layers
    assert all(type(layer.encoder_attn) is BeamFoldingCrossAttention for layer in layers)
    assert all(type(layer.self_attn).__name__ == "BartAttention" for layer in layers)
    assert any(key.endswith("encoder_attn.k_proj.weight") for key in tiny_model.state_dict())


def _medium_model() -> Mega2BartModel:
    """Full-size widths with one layer each: the seed MEGA encoder's shape, bart-large's decoder shape."""
    torch.manual_seed(0)
    vocab = 1024  # small vocabulary: the widths, not the embedding tables, are what is exercised
    # the seed encoder's and bart-large's widths from the presets, one layer each
    encoder = MegaModel(
        MegaConfig(**{**SEED_ENCODER, "vocab_size": vocab, "num_hidden_layers": 1}), add_pooling_layer=False
    )
    decoder = BartForCausalLM(
        BartConfig(
            **{
                **BART_LARGE_DECODER,
                "vocab_size": vocab,
                "encoder_layers": 1,
                "decoder_layers": 1,
                "is_decoder": True,
                "add_cross_attention": True,
            }
        )
    )
    model = Mega2BartModel(encoder=encoder, decoder=decoder).eval()
    model.config.decoder_start_token_id, model.config.pad_token_id = 2, 1
    model.generation_config.decoder_start_token_id = 2
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 1, 2
    return model


def test_medium_model_2000_tokens_4_beams_matches_stock() -> None:
    model = _medium_model()
    batch = _padded_batch((2000, 900), vocab=1024, seed=8)
    options = dict(num_beams=4, length_penalty=1.2, no_repeat_ngram_size=3, max_new_tokens=8, min_new_tokens=8)
    options.update(SCORED)
    shared, stock = _both(model, **batch, **options)
    assert shared.sequences.shape == (2, 9)
    _assert_same(shared, stock)
