"""MegaConfig.ema_init: the long-reach EMA init (its reach spectrum, its reach across chunks), the 4.x init kept
exact, and the builder and `pretrain` choosing "long" for every MEGA they initialise themselves."""

from __future__ import annotations

import pytest
import torch

from mega2bart.models.mega import MegaConfig, MegaModel
from mega2bart.models.mega.modeling_mega import long_reach_factors
from mega2bart.presets import TINY_ENCODER


def _gates(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "damping_factor")]


def _reach_and_gain(gate: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """1 / (1 - q) and p / (1 - q) per (row, dimension), from the weights (p = sigmoid(damping),
    q = 1 - p * sigmoid(decay)), in float64."""
    p = torch.sigmoid(gate.damping_factor.detach().double())[..., 0]
    q = 1 - p * torch.sigmoid(gate.decay_factor.detach().double())[..., 0]
    return 1 / (1 - q), p / (1 - q)


@pytest.mark.parametrize(("n", "low", "high"), [(16, 4.0, 16384), (4, 4.0, 1024), (8, 1.5, 4096)])
def test_long_init_spreads_reaches_log_uniformly(n: int, low: float, high: int) -> None:
    config = MegaConfig(**{**TINY_ENCODER, "ema_projection_size": n, "ema_init": "long", "ema_min_reach": low})
    config.ema_max_reach = high
    gates = _gates(MegaModel(config))
    assert len(gates) == TINY_ENCODER["num_hidden_layers"]
    expected = torch.logspace(torch.log10(torch.tensor(low)), torch.log10(torch.tensor(float(high))), n).double()
    for gate in gates:
        reach, gain = _reach_and_gain(gate)  # (rows, N): every row (channel and direction) the same spectrum
        # the factors are float32 parameters: the reach of a float32 sigmoid near 1 is good to ~1e-7 * reach
        torch.testing.assert_close(reach, expected.expand_as(reach), rtol=2e-5, atol=0)
        # gain 2 from reach 2 up (sigmoid(decay) = 1/2), sqrt(reach) below
        torch.testing.assert_close(gain, torch.where(reach < 2, reach.sqrt(), 2.0), rtol=2e-5, atol=0)


def test_long_init_defaults_to_max_positions_and_keeps_the_other_ema_weights_as_port() -> None:
    torch.manual_seed(0)
    port = MegaModel(MegaConfig(**TINY_ENCODER))
    torch.manual_seed(0)
    long = MegaModel(MegaConfig(**{**TINY_ENCODER, "ema_init": "long"}))
    reach, _ = _reach_and_gain(_gates(long)[0])
    torch.testing.assert_close(float(reach.max()), float(TINY_ENCODER["max_positions"]), rtol=2e-5, atol=0)
    port_reach, _ = _reach_and_gain(_gates(port)[0])
    assert float(port_reach.max()) < 12  # the 4.x init: every dimension ~4 tokens
    for a, b in zip(_gates(port), _gates(long), strict=True):
        assert not torch.equal(a.damping_factor, b.damping_factor)
        assert a.ema_expansion_matrix.shape == b.ema_expansion_matrix.shape


def test_port_init_is_unchanged_and_the_default() -> None:
    """ema_init None (every 4.x config) and "port" draw the same weights as before the option existed:
    damping and decay ~N(0, ema_delta_alpha_range), in the same order."""
    weights = []
    for extra in ({}, {"ema_init": "port"}):
        torch.manual_seed(0)
        weights.append(MegaModel(MegaConfig(**{**TINY_ENCODER, **extra})).state_dict())
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    damping = torch.cat([w.flatten() for k, w in weights[0].items() if k.endswith("damping_factor")])
    assert 0.1 < float(damping.std()) < 0.3  # N(0, 0.2)


def test_long_reach_carries_a_change_across_chunks_port_does_not() -> None:
    """Changing the first 8 tokens of a 1,024-token input (chunks of 64: attention stays inside a chunk) moves
    the encoder's output 15 chunks later only through the EMA: by rounding alone (~1e-7) with the 4.x init,
    measurably with the long-reach init."""
    far = {}
    for init in ("port", "long"):
        torch.manual_seed(0)
        encoder = MegaModel(MegaConfig(**{**TINY_ENCODER, "max_positions": 1024, "ema_init": init})).eval()
        ids = torch.randint(3, 1000, (1, 1024))
        changed = ids.clone()
        changed[0, :8] = torch.randint(3, 1000, (8,))
        with torch.no_grad():
            delta = (encoder(ids).last_hidden_state - encoder(changed).last_hidden_state).abs()
        far[init] = float(delta[0, 1000].max())
    assert far["port"] < 5e-6 and far["long"] > 5e-5, far


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ema_init", "wide"),
        ("ema_min_reach", 1.0),
        ("ema_min_reach", "4"),
        ("ema_max_reach", 2),
        ("ema_max_reach", 1.5),
    ],
)
def test_bad_ema_init_settings_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"MegaConfig.{field} "):
        MegaConfig(**{**TINY_ENCODER, field: value})


def test_long_reach_factors_are_finite_at_the_ends() -> None:
    damping, decay = long_reach_factors(16, 1.01, 1 << 20)
    assert torch.isfinite(damping).all() and torch.isfinite(decay).all()


def test_builder_initialises_long_and_says_so_checkpoints_are_untouched(tmp_path) -> None:
    from mega2bart.builder import build_mega2bart, describe_mega2bart, load_mega2bart, save_mega2bart
    from mega2bart.presets import TINY_DECODER

    model, tokenizer = build_mega2bart(dict(TINY_ENCODER), dict(TINY_DECODER), "offline")
    assert model.encoder.config.ema_init == "long"
    reach, _ = _reach_and_gain(_gates(model.encoder)[0])
    assert float(reach.max()) > 1000
    assert model.mega2bart_build_info.encoder_ema_init.startswith("long: reaches log-spaced from 4 to ")
    save_mega2bart(model, tokenizer, tmp_path / "built")
    description = describe_mega2bart(tmp_path / "built")
    assert description.build.encoder_ema_init == model.mega2bart_build_info.encoder_ema_init
    assert any(line.startswith("encoder EMA init: long") for line in description.summary_lines())
    assert "Encoder EMA init: long" in (tmp_path / "built" / "README.md").read_text(encoding="utf-8")

    # an explicit choice is kept
    port, _ = build_mega2bart({**TINY_ENCODER, "ema_init": "port"}, dict(TINY_DECODER), "offline")
    assert port.mega2bart_build_info.encoder_ema_init.startswith("port")

    # an encoder from a checkpoint keeps its weights, whatever its config says
    encoder = MegaModel(MegaConfig(**{**TINY_ENCODER, "use_pooler": False}))
    with torch.no_grad():
        for gate in _gates(encoder):
            gate.damping_factor.fill_(0.25)
    encoder.save_pretrained(tmp_path / "encoder")
    rebuilt, _ = build_mega2bart(str(tmp_path / "encoder"), dict(TINY_DECODER), "offline")
    for gate in _gates(rebuilt.encoder):
        assert torch.equal(gate.damping_factor, torch.full_like(gate.damping_factor, 0.25))
    assert rebuilt.mega2bart_build_info.encoder_ema_init.startswith("checkpoint")
    assert load_mega2bart(tmp_path / "built")[0].encoder.config.ema_init == "long"


def test_pretrain_from_scratch_is_long_reach() -> None:
    from mega2bart.pretraining import load_mlm_model

    model = load_mlm_model("tiny")
    assert model.config.ema_init == "long"
    reach, _ = _reach_and_gain(_gates(model)[0])
    assert float(reach.max()) > 1000
