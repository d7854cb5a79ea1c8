"""torch.compile on the native MEGA encoder: no graph breaks, and the compiled model matches eager.

Tracing (torch._dynamo.explain) takes seconds and runs by default; compiling with inductor takes
minutes on a small CPU, so those tests are marked e2e.
"""

from __future__ import annotations

import pytest
import torch
from mega_tiny import perturbed, random_ids, tiny_config

from mega2bart.models.mega import MegaModel

ATOL = 1e-5  # fp32, hidden 32, sums of <= 96 terms: rounding differences are ~1e-7


def _model(layers: int = 2) -> MegaModel:
    torch.manual_seed(0)
    return perturbed(MegaModel(tiny_config(num_hidden_layers=layers), add_pooling_layer=False))


def _batch(length: int) -> dict[str, torch.Tensor]:
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, length * 3 // 4 :] = 0
    return {"input_ids": random_ids(2, length), "attention_mask": mask}


@pytest.mark.parametrize("training", [False, True], ids=["infer", "train"])
@pytest.mark.parametrize("length", [48, 40, 10], ids=["chunks", "padded_inside", "one_block"])
def test_no_graph_breaks(training: bool, length: int) -> None:
    """One graph per call: masks, padding inside, the EMA's recompute-in-backward checkpoint."""
    import torch._dynamo

    model = _model().train(training)
    torch._dynamo.reset()
    with torch.set_grad_enabled(training):
        explanation = torch._dynamo.explain(model)(**_batch(length))
    reasons = [b.reason.splitlines()[0] for b in explanation.break_reasons]
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, reasons


@pytest.mark.e2e
def test_compiled_matches_eager_fixed_length() -> None:
    """fullgraph compile at one length: outputs and every gradient within fp32 rounding of eager."""
    import torch._dynamo

    torch._dynamo.reset()
    model = _model(layers=1).train()  # dropouts are 0 in the tiny config: train mode is deterministic
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    batch = _batch(48)
    results = []
    for run in (model, compiled):
        model.zero_grad(set_to_none=True)
        hidden = run(**batch).last_hidden_state
        hidden.square().sum().backward()
        results.append((hidden.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (eager, eager_grads), (fast, fast_grads) = results
    diff = float((fast - eager).abs().max())
    assert diff <= ATOL, f"compiled forward differs from eager by {diff:.2e}"
    # a parameter gradient sums 2 x 48 per-position terms that cancel (token types: 6.7e-3 from terms near 1),
    # so the bound is fp32 rounding of such sums: positions x eps x 16 x the largest gradient
    largest = max(float(g.abs().max()) for g in eager_grads.values())
    bound = 2 * 48 * 2.0**-23 * 16 * largest
    for name, grad in eager_grads.items():
        gdiff = float((fast_grads[name] - grad).abs().max())
        assert gdiff <= bound, f"{name}: gradient differs by {gdiff:.2e} (bound {bound:.2e})"


@pytest.mark.e2e
def test_compiled_dynamic_across_lengths() -> None:
    """dynamic=True: lengths that are multiples of chunk_size share one graph and match eager."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = _model(layers=1).eval()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    with torch.no_grad():
        for length in (48, 64, 96):
            eager = model(**_batch(length)).last_hidden_state
            fast = compiled(**_batch(length)).last_hidden_state
            diff = float((fast - eager).abs().max())
            assert diff <= ATOL, f"L={length}: compiled differs from eager by {diff:.2e}"
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs == 1, f"expected one compiled graph for lengths 48/64/96, got {graphs}"
