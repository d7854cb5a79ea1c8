"""FSDP2 on the CPU without the Trainer: the shard units and checkpointing of configs/accelerate-fsdp.yaml.

    python tests/fsdp2_worker.py MODEL_DIR OUT_DIR                      # one process, no sharding
    torchrun --nproc_per_node 2 tests/fsdp2_worker.py MODEL_DIR OUT_DIR # FSDP2 over gloo

accelerate does not give the Trainer FSDP on the CPU (see configs/README.md), but torch's FSDP2 runs
there: each MEGA block and BART decoder layer is wrapped in activation checkpointing, then made its
own `fully_shard` unit, the root last. Three SGD steps on one fixed batch (every process sees the
whole batch, so the averaged gradient is the one-process gradient); the losses go to
OUT_DIR/losses.json and the full (unsharded) weights to OUT_DIR/model.safetensors. Run by
tests/test_distributed.py, which compares the two runs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file


def main(model_dir: str, out_dir: str) -> None:
    from transformers.models.bart.modeling_bart import BartDecoderLayer

    from mega2bart.builder import load_mega2bart
    from mega2bart.models.mega.modeling_mega import MegaBlock

    sharded = int(os.environ.get("WORLD_SIZE", "1")) > 1
    torch.manual_seed(0)
    model, tokenizer = load_mega2bart(model_dir)
    model.eval()  # dropout off: the runs must be deterministic to compare; gradients flow as in training
    if sharded:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            apply_activation_checkpointing,
            checkpoint_wrapper,
        )
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        units = (MegaBlock, BartDecoderLayer)
        apply_activation_checkpointing(
            model, checkpoint_wrapper_fn=checkpoint_wrapper, check_fn=lambda m: isinstance(m, units)
        )
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        wrapped = [m for m in model.modules() if isinstance(m, units)]
        for module in wrapped:
            fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        print(f"fully_shard units: {len(wrapped)} + root", flush=True)
    # plain SGD: an update proportional to the gradient keeps rounding differences at rounding size (AdamW
    # would blow the pure-noise gradient of the attention key biases, zero by symmetry, up to steps of lr)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    documents = ["A short document about sharded training.", "Another document, a little longer, on the same topic."]
    batch = tokenizer(documents, return_tensors="pt", padding="max_length", max_length=64)
    labels = tokenizer(text_target=["Sharding.", "The same topic."], return_tensors="pt", padding=True)["input_ids"]
    labels[labels == tokenizer.pad_token_id] = -100
    losses = []
    for _ in range(3):
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = model.state_dict()
    if not sharded or dist.get_rank() == 0:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file(
            {name: tensor.detach().clone().contiguous() for name, tensor in state.items()},
            str(out / "model.safetensors"),
        )
        (out / "losses.json").write_text(json.dumps(losses))
    if sharded:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
