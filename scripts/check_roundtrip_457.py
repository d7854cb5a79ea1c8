"""Checkpoint round trip between the transformers 4.57.1 MEGA port and mega2bart's native MEGA.

    "$(bash scripts/reference_env.sh)" scripts/check_roundtrip_457.py [--native-python .venv/bin/python]

(Started with another python, e.g. .venv/bin/python, it re-runs itself in the reference environment that
scripts/reference_env.sh creates, or says how to create it.)

For every variant (tiny config: MegaModel with pooler, MegaModel without pooler, MegaForMaskedLM;
seed-like config with 2 layers: MegaForMaskedLM and MegaModel with pooler):
  (i)   in this process (transformers 4.57.1): build + perturb the port's model, `save_pretrained`
        to dir A, compute reference outputs;
  (ii)  in a subprocess with the project venv (transformers 5, mega2bart): load dir A with the
        native `from_pretrained` (missing/unexpected keys reported), compute the outputs, and
        `save_pretrained` to dir B;
  (iii) back here: load dir B with the port's `from_pretrained` (missing/unexpected keys reported),
        compute the outputs, and compare all three (port, native, port reloaded from native's save).
Exit status 0 only if every variant loads cleanly both ways and all outputs agree (atol 1e-5).

The same file runs the native half when called with `--native-half` (the subprocess mode).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-5
RTOL = 1e-5


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


def output_tensors(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The comparable outputs of a MegaModel / MegaForMaskedLM forward (same field names in both)."""
    model.eval()
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, return_dict=True)
    tensors = {"last_hidden": out.hidden_states[-1].clone(), "embeddings": out.hidden_states[0].clone()}
    for name in ("last_hidden_state", "pooler_output", "logits"):
        value = getattr(out, name, None)
        if value is not None:
            tensors[name] = value.clone()
    return tensors


def loading_info_dict(info: dict[str, Any]) -> dict[str, list[str]]:
    return {k: sorted(str(x) for x in info.get(k, [])) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}


# ----------------------------------------------------------------------------------------------
# native half (project venv, transformers 5)


def native_half(dir_a: Path, dir_b: Path, model_class: str, add_pooling_layer: bool) -> None:
    sys.path.insert(0, str(REPO))
    import mega2bart.models.mega as mega

    cls = getattr(mega, model_class)
    kwargs = {"add_pooling_layer": add_pooling_layer} if model_class == "MegaModel" else {}
    model, info = cls.from_pretrained(dir_a, output_loading_info=True, **kwargs)
    inputs = load_file(str(dir_a / "inputs.safetensors"))
    save_file(output_tensors(model, inputs), str(dir_a / "native_outputs.safetensors"))
    model.save_pretrained(dir_b)
    (dir_a / "native_loading_info.json").write_text(json.dumps(loading_info_dict(info), indent=2))


# ----------------------------------------------------------------------------------------------
# port half (transformers 4.57.1)


def build_port_model(
    kind: str, model_class: str, add_pooling_layer: bool
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    sys.path.insert(0, str(REPO / "scripts"))
    sys.path.insert(0, str(REPO / "tests"))
    import make_fixtures as mf  # checks transformers == 4.57.1
    from mega_fixture_weights import seeded_state_dict
    from transformers.models.deprecated.mega import modeling_mega as mm
    from transformers.models.deprecated.mega.configuration_mega import MegaConfig

    cls = getattr(mm, model_class)
    kwargs = {"add_pooling_layer": add_pooling_layer} if model_class == "MegaModel" else {}
    if kind == "tiny":
        config = MegaConfig(**mf.TINY_BASE)
        model = mf.build_tiny(cls, config, **kwargs)
        inputs = mf.tiny_inputs("padded48")
    else:
        config = MegaConfig(**{**mf.SEED_2L, "architectures": [model_class]})
        torch.manual_seed(0)
        model = cls(config, **kwargs)
        sd = model.state_dict()
        tied = {k for k in ("mlm_head.weight",) if k in sd}
        prefix = "mega." if model_class != "MegaModel" else ""
        state = seeded_state_dict({k: tuple(v.shape) for k, v in sd.items() if k not in tied}, seed=0)
        for key in tied:
            state[key] = state[f"{prefix}embedding_layer.word_embeddings.weight"]
        model.load_state_dict(state, strict=True)
        ids = mf._ids([0, 17], 1024, 50000)  # (2, 1024); row 1 padded from 700
        mask = torch.ones_like(ids)
        ids[1, 700:] = 1
        mask[1, 700:] = 0
        inputs = {"input_ids": ids, "attention_mask": mask}
    return model.eval(), inputs


def compare(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], mask: torch.Tensor) -> tuple[bool, dict[str, str]]:
    ok = True
    report = {}
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            ok = False
            report[name] = f"only in {'first' if name in a else 'second'}"
            continue
        x, y = a[name].double(), b[name].double()
        if x.shape != y.shape:
            ok = False
            report[name] = f"shape {tuple(x.shape)} vs {tuple(y.shape)}"
            continue
        close = bool(((x - y).abs() <= ATOL + RTOL * y.abs()).all())
        diff = float((x - y).abs().max())
        if x.dim() == 3 and x.shape[:2] == mask.shape:
            real = mask.bool()
            report[name] = f"max {diff:.2e} (real {float((x[real] - y[real]).abs().max()):.2e})"
        else:
            report[name] = f"max {diff:.2e}"
        ok &= close
    return ok, report


def run_variant(kind: str, model_class: str, add_pooling_layer: bool, native_python: str, work: Path) -> bool:
    from transformers.models.deprecated.mega import modeling_mega as mm

    name = f"{kind}/{model_class}" + ("" if model_class != "MegaModel" else f"(pooler={add_pooling_layer})")
    dir_a, dir_b = work / "a", work / "b"
    dir_a.mkdir(parents=True)
    model, inputs = build_port_model(kind, model_class, add_pooling_layer)
    model.save_pretrained(dir_a)
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(dir_a / "inputs.safetensors"))
    port_out = output_tensors(model, inputs)
    port_state = {k: v.clone() for k, v in model.state_dict().items()}
    del model

    cmd = [
        native_python,
        str(Path(__file__).resolve()),
        "--native-half",
        str(dir_a),
        str(dir_b),
        model_class,
        "--add-pooling-layer" if add_pooling_layer else "--no-add-pooling-layer",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"[{name}] FAIL: native half exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return False
    native_info = json.loads((dir_a / "native_loading_info.json").read_text())
    native_out = load_file(str(dir_a / "native_outputs.safetensors"))

    cls = getattr(mm, model_class)
    kwargs = {"add_pooling_layer": add_pooling_layer} if model_class == "MegaModel" else {}
    reloaded, port_info = cls.from_pretrained(dir_b, output_loading_info=True, **kwargs)
    port_info = loading_info_dict(port_info)
    reload_out = output_tensors(reloaded, inputs)
    reload_state = reloaded.state_dict()
    state_equal = set(reload_state) == set(port_state) and all(
        torch.equal(reload_state[k], port_state[k]) for k in port_state
    )
    saved_by_native = (
        sorted(load_file(str(dir_b / "model.safetensors")).keys())
        if (dir_b / "model.safetensors").exists()
        else sorted(p.name for p in dir_b.iterdir())
    )
    saved_by_port = sorted(load_file(str(dir_a / "model.safetensors")).keys())

    mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
    ok_native, rep_native = compare(native_out, port_out, mask)
    ok_reload, rep_reload = compare(reload_out, port_out, mask)
    clean_native = not any(native_info.values())
    clean_port = not any(port_info.values())
    same_keys = saved_by_native == saved_by_port
    ok = ok_native and ok_reload and clean_native and clean_port and state_equal and same_keys

    print(f"[{name}] {'PASS' if ok else 'FAIL'}")
    print(f"  native from_pretrained(4.57.1 save): {native_info}")
    print(f"  4.57.1 from_pretrained(native save): {port_info}")
    print(
        f"  saved key sets equal (port {len(saved_by_port)} vs native {len(saved_by_native)}): {same_keys}"
        + (
            ""
            if same_keys
            else f"; only port {sorted(set(saved_by_port) - set(saved_by_native))}, "
            f"only native {sorted(set(saved_by_native) - set(saved_by_port))}"
        )
    )
    print(f"  state dict after round trip bit-identical: {state_equal}")
    print(f"  native vs port outputs: {rep_native}")
    print(f"  port(reloaded from native save) vs port outputs: {rep_reload}")
    return ok


VARIANTS = [
    ("tiny", "MegaModel", True),
    ("tiny", "MegaModel", False),
    ("tiny", "MegaForMaskedLM", False),
    ("seed2l", "MegaForMaskedLM", False),
    ("seed2l", "MegaModel", True),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--native-half",
        nargs=3,
        metavar=("DIR_A", "DIR_B", "CLASS"),
        default=None,
        help="internal: run the native half (project venv)",
    )
    parser.add_argument("--add-pooling-layer", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--native-python", default=str(REPO / ".venv" / "bin" / "python"))
    parser.add_argument("--only", choices=["tiny", "seed2l"], default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    if args.native_half:
        dir_a, dir_b, model_class = args.native_half
        native_half(Path(dir_a), Path(dir_b), model_class, args.add_pooling_layer)
        return 0

    import transformers

    if transformers.__version__ != "4.57.1":
        run_in_reference_env(transformers.__version__)
    transformers.logging.set_verbosity_error()
    results = {}
    for kind, model_class, pooler in VARIANTS:
        if args.only and kind != args.only:
            continue
        with tempfile.TemporaryDirectory(prefix="mega_roundtrip_") as tmp:
            results[(kind, model_class, pooler)] = run_variant(kind, model_class, pooler, args.native_python, Path(tmp))
    passed = sum(results.values())
    print(f"SUMMARY: {passed}/{len(results)} variants passed the 4.57.1 <-> native round trip")
    for key, ok in results.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {key}")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
