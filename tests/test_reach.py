"""Each MEGA layer's EMA reach from the weights (`mega2bart.models.mega.reach`, `mega2bart info`).

The numbers are checked against a hand computation in plain `math`: with p = sigmoid(damping_factor),
delta = sigmoid(decay_factor) and q = 1 - p * delta, an impulse fades to 1/e after 1 / -ln q tokens and
to 1% after ln(100) / -ln q.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics

import pytest
import torch
from mega_tiny import tiny_config
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from mega2bart.builder import MegaDescription, ModelDescription, describe_model
from mega2bart.cli import ERROR_EXIT_CODE, app
from mega2bart.models.mega import MegaModel
from mega2bart.models.mega.reach import ema_reach, mega_reach

runner = CliRunner()
CHUNK = 32  # chunk_size of the tiny model below (a 1% reach of 16.008 tokens for q = 3/4 stays inside)


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _hand_reach(damping: float, decay: float) -> tuple[float, float]:
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    q = 1 - sigmoid(damping) * sigmoid(decay)
    return 1 / -math.log(q), math.log(100) / -math.log(q)


def _long_reach_factors(shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """damping = logit(2 / r), decay = 0 (delta 1/2): q = 1 - 1/r, reaches r log-spaced from 2 to 4,096 tokens."""
    reaches = torch.logspace(math.log10(2), math.log10(4096), math.prod(shape), dtype=torch.float64)
    return torch.logit(2 / reaches).view(shape).float(), torch.zeros(shape)


@pytest.fixture
def chosen_mega_dir(tmp_path):
    """A tiny MegaModel whose layer 0 has every factor 0 (q = 3/4) and layer 1 reaches spread from 2 to 4,096."""
    torch.manual_seed(0)
    model = MegaModel(tiny_config(chunk_size=CHUNK))
    with torch.no_grad():
        first, second = (layer.mega_layer.ema_gate for layer in model.layers)
        first.damping_factor.zero_()
        first.decay_factor.zero_()
        damping, decay = _long_reach_factors(second.damping_factor.shape)
        second.damping_factor.copy_(damping)
        second.decay_factor.copy_(decay)
    model.save_pretrained(tmp_path / "mega", allow_nonfinite=True)  # reach 2 is p = 1: damping logit(1) = inf
    return tmp_path / "mega"


def test_reach_matches_a_hand_computation(chosen_mega_dir) -> None:
    description = describe_model(chosen_mega_dir)
    assert isinstance(description, MegaDescription) and description.model_class == "MegaModel"
    reach = description.reach
    assert reach.chunk_size == CHUNK and reach.truncation is None and len(reach.layers) == 2

    first, second = reach.layers
    e_fold, one_percent = _hand_reach(0.0, 0.0)  # q = 3/4: 3.48 and 16.0 tokens
    assert first.dimensions == 2 * 32 * 4  # bidirectional: 2H kernel rows, N = 4
    for stats, expected in ((first.to_1_over_e, e_fold), (first.to_1_percent, one_percent)):
        for value in (stats.min, stats.median, stats.max):
            assert value == pytest.approx(expected, rel=1e-6)
    assert first.beyond_chunk == 0 and first.share_beyond_chunk == 0.0

    weights = load_file(chosen_mega_dir / "model.safetensors")
    damping = weights["layers.1.mega_layer.ema_gate.damping_factor"].flatten().tolist()
    decay = weights["layers.1.mega_layer.ema_gate.decay_factor"].flatten().tolist()
    hand = [_hand_reach(a, d) for a, d in zip(damping, decay, strict=True)]
    for stats, column in ((second.to_1_over_e, 0), (second.to_1_percent, 1)):
        values = [h[column] for h in hand]
        assert stats.min == pytest.approx(min(values), rel=1e-6)
        assert stats.median == pytest.approx(statistics.median(values), rel=1e-6)
        assert stats.max == pytest.approx(max(values), rel=1e-6)
    assert second.to_1_over_e.max == pytest.approx(4096, rel=1e-3)  # q = 1 - 1/r: 1 / -ln q is r - 1/2 + O(1/r)
    assert second.beyond_chunk == sum(h[1] > CHUNK for h in hand) > 0
    assert reach.crosses_a_chunk and reach.warning is None


def test_truncation_cuts_the_reach_and_no_chunking_has_no_share() -> None:
    shape = (64, 4, 1)
    damping, decay = _long_reach_factors(torch.Size(shape))
    tensors = {"mega.layers.0.mega_layer.ema_gate.damping_factor": damping}
    tensors["mega.layers.0.mega_layer.ema_gate.decay_factor"] = decay
    cut = mega_reach(tensors, {"use_chunking": True, "chunk_size": CHUNK, "truncation": CHUNK})
    assert cut.layers[0].beyond_chunk == 0 and not cut.crosses_a_chunk
    assert "truncated to 32 taps" in cut.warning
    assert any("truncation 32" in line for line in cut.table_lines())

    whole = mega_reach(tensors, {"use_chunking": False, "chunk_size": -1})
    assert whole.chunk_size is None and whole.crosses_a_chunk is None and whole.warning is None
    assert whole.layers[0].beyond_chunk is None and whole.layers[0].share_beyond_chunk is None
    assert "no chunking" in whole.table_lines()[0] and "n/a" in whole.table_lines()[-1]

    with pytest.raises(ValueError, match="more than one model"):
        mega_reach({**tensors, **{"decoder." + k[5:]: v for k, v in tensors.items()}}, {})
    with pytest.raises(ValueError, match="only"):
        mega_reach({"layers.0.mega_layer.ema_gate.decay_factor": decay}, {})


def test_extreme_factors_give_zero_and_infinite_reach_in_valid_json() -> None:
    damping = torch.tensor([50.0, -800.0]).view(2, 1, 1)  # p = 1 / p = 0 in float64
    decay = torch.tensor([50.0, 0.0]).view(2, 1, 1)
    e_fold, one_percent = ema_reach(damping, decay)
    assert e_fold[0] == 0 and one_percent[0] == 0  # q = 0: gone after the first tap
    assert math.isinf(e_fold[1]) and math.isinf(one_percent[1])  # q = 1: never fades
    tensors = {
        "layers.0.mega_layer.ema_gate.damping_factor": damping,
        "layers.0.mega_layer.ema_gate.decay_factor": decay,
    }
    reach = mega_reach(tensors, {"use_chunking": True, "chunk_size": CHUNK})
    text = json.dumps(reach.to_dict(), allow_nan=False)
    assert json.loads(text)["layers"][0]["to_1_percent"]["max"] == "inf"
    assert reach.layers[0].beyond_chunk == 1 and reach.layers[0].to_1_over_e.median == math.inf
    assert reach.table_lines()[-1].split()[3] == "inf"


def test_info_warns_when_no_dimension_crosses_a_chunk(tiny_mega2bart_dir) -> None:
    """MEGA's default init (both factors ~N(0, 0.2)) gives every dimension a 1/e reach of 2-6 tokens."""
    shown = _invoke("info", tiny_mega2bart_dir)
    assert shown.exit_code == 0, shown.output
    assert (
        "EMA reach (tokens until an impulse fades to 1/e and to 1% of its peak; 256 dimensions per layer; chunk 64)"
        in (shown.output)
    )
    rows = [line.split() for line in shown.output.splitlines() if line.strip().startswith(("0 ", "1 "))]
    assert len(rows) == 2 and all(row[-2:] == ["0/256", "(0%)"] for row in rows)
    assert all(2 < float(row[2]) < 5 for row in rows)  # the 1/e median
    warnings = [line for line in shown.output.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: no EMA dimension reaches past one chunk (64 tokens): nothing crosses a chunk but the few tokens at "
        "its edges (one chunk further per layer at most), so the model can hardly use context beyond a chunk; a "
        "long-reach EMA init trained on long inputs is what reaches further"
    ]

    data = json.loads(_invoke("info", tiny_mega2bart_dir, "--json").output)
    assert data["reach"]["chunk_size"] == 64 and data["reach"]["crosses_a_chunk"] is False
    assert data["reach"]["warning"] == warnings[0]
    assert [layer["layer"] for layer in data["reach"]["layers"]] == [0, 1]
    assert data["reach"]["layers"][0]["share_beyond_chunk"] == 0.0
    assert set(data["reach"]["layers"][0]["to_1_over_e"]) == {"min", "median", "max"}
    # computed from the weights each time, never stored: training changes them
    assert "reach" not in json.loads((tiny_mega2bart_dir / "mega2bart_build.json").read_text())
    assert "reach" not in ModelDescription.from_dict(data).to_dict(with_path=False)


def test_info_has_no_warning_when_one_dimension_reaches_past_a_chunk(tmp_path, tiny_mega2bart_dir) -> None:
    model_dir = tmp_path / "long"
    shutil.copytree(tiny_mega2bart_dir, model_dir)
    weights = load_file(model_dir / "model.safetensors")
    key = "encoder.layers.1.mega_layer.ema_gate.damping_factor"
    weights[key][0, 0, 0] = math.log(2 / 999)  # with decay ~0: q ~ 1 - 1/1000, 1% reach ~4,600 tokens
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})

    shown = _invoke("info", model_dir)
    assert shown.exit_code == 0, shown.output
    assert "warning:" not in shown.output and "1/256 (<1%)" in shown.output
    data = json.loads(_invoke("info", model_dir, "--json").output)["reach"]
    assert data["crosses_a_chunk"] is True and data["warning"] is None
    assert [layer["beyond_chunk"] for layer in data["layers"]] == [0, 1]
    assert data["layers"][1]["to_1_percent"]["max"] > 1000


def test_info_on_a_bare_mega_encoder(tiny_mega_encoder_dir) -> None:
    shown = _invoke("info", tiny_mega_encoder_dir)
    assert shown.exit_code == 0, shown.output
    assert (
        "architecture: MegaForMaskedLM = mega encoder (2 layers, width 32, chunk 64; bidirectional EMA; "
        "16,384 positions; vocabulary 50272)" in shown.output
    )
    assert "EMA reach (tokens until" in shown.output and "warning: no EMA dimension reaches past" in shown.output
    data = json.loads(_invoke("info", tiny_mega_encoder_dir, "--json").output)
    assert data["model_class"] == "MegaForMaskedLM" and len(data["reach"]["layers"]) == 2
    assert data["parameters"] > 0


def test_info_refuses_other_models_in_one_line(tiny_bart_decoder_dir, tmp_path) -> None:
    result = _invoke("info", tiny_bart_decoder_dir)
    assert result.exit_code == ERROR_EXIT_CODE and "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0
    assert "holds a 'bart' model: `mega2bart info` describes a mega2bart model" in result.output

    (tmp_path / "config.json").write_text("{not json")
    result = _invoke("info", tmp_path)
    assert result.exit_code == ERROR_EXIT_CODE and "config.json is damaged" in result.output


@pytest.mark.slow
def test_info_on_the_seed_checkpoint() -> None:
    from huggingface_hub import list_repo_files, snapshot_download

    from mega2bart.presets import DEFAULT_ENCODER

    files = list_repo_files(DEFAULT_ENCODER)
    weights = [name for name in files if name.endswith(".safetensors")] or [
        name for name in files if name.startswith("pytorch_model") and name.endswith(".bin")
    ]
    path = snapshot_download(DEFAULT_ENCODER, allow_patterns=["config.json", *weights])
    shown = _invoke("info", path)
    assert shown.exit_code == 0, shown.output
    data = json.loads(_invoke("info", path, "--json").output)
    assert len(data["reach"]["layers"]) == 8 and data["reach"]["chunk_size"] == 1024
