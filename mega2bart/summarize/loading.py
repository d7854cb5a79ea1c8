"""A saved model for inference: on which device (`inference_device`), in which dtype (`resolve_dtype`),
loaded (`load_for_inference`); and what a run reports of it (`model_precision`, `throughput`)."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

logger = logging.getLogger("mega2bart.summarize")  # the package's logger: the name its messages have always had


DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""`--dtype` names -> the dtype the model's weights and activations use for inference."""


def inference_device() -> torch.device:
    """CUDA when available (the process's own GPU under torchrun: LOCAL_RANK), else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    return torch.device("cpu")


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """`fp32` | `bf16` | `fp16` -> torch dtype, refusing what the device cannot run (fp16 on CPU)."""
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not one of {', '.join(DTYPES)}: pass --dtype fp32, bf16 or fp16")
    device = torch.device(device)
    if name == "fp16" and device.type == "cpu":
        raise ValueError(
            "dtype fp16 is not supported on CPU (half-precision kernels are missing or slow there): "
            "pass --dtype bf16 or --dtype fp32, or run on a CUDA GPU"
        )
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"dtype bf16 is not supported by this GPU ({torch.cuda.get_device_name(device)}): pass --dtype fp16 or fp32"
        )
    return DTYPES[name]


def load_for_inference(model_dir: str | os.PathLike, dtype: str = "fp32") -> tuple[Any, Any]:
    """A saved mega2bart model in eval mode, in `dtype`, on CUDA when available (else the CPU), + its tokenizer."""
    from mega2bart.builder import load_mega2bart

    device = inference_device()
    torch_dtype = resolve_dtype(dtype, device)  # before loading: a wrong choice fails at once
    model, tokenizer = load_mega2bart(model_dir, dtype=torch_dtype)
    model = model.to(device=device, dtype=torch_dtype).eval()
    logger.info("model loaded for inference on %s in %s", device, dtype)
    return model, tokenizer


def throughput(documents: int, seconds: float) -> dict[str, Any]:
    """{"documents", "seconds", "documents_per_hour"} of one run (None per hour when nothing was timed)."""
    return {
        "documents": documents,
        "seconds": round(seconds, 3),
        "documents_per_hour": round(documents * 3600.0 / seconds, 1) if seconds > 0 else None,
    }


def model_precision(model: Any) -> dict[str, str]:
    parameter = next(model.parameters())
    name = {dtype: key for key, dtype in DTYPES.items()}.get(parameter.dtype, str(parameter.dtype))
    return {"dtype": name, "device": parameter.device.type}


__all__ = ["DTYPES", "inference_device", "load_for_inference", "model_precision", "resolve_dtype", "throughput"]
