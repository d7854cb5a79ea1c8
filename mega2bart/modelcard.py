"""The model card (README.md) of a saved mega2bart model, rendered from `describe_mega2bart`'s dict."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def _source_line(source: Mapping[str, Any] | None) -> str:
    if not source:
        return "unknown"
    kind, name, revision = source.get("kind"), source.get("name"), source.get("revision")
    if kind == "hub":
        link = f"[`{name}`](https://huggingface.co/{name})"
        return f"{link} (Hub, revision `{revision}`)" if revision else f"{link} (Hub, revision unknown)"
    if kind == "local":
        return f"local directory `{name}`"
    if kind == "config":
        return f"random initialisation from a `{name}` (no pretrained weights)"
    if kind == "offline":
        return (
            f"`{name}`: GPT-2 byte-level BPE files in BART's layout (50265 tokens, `<s>`0 `<pad>`1 `</s>`2 "
            "`<mask>`50264) but NOT facebook/bart-large's ids; only for random-init models"
        )
    return f"a `{name}` object passed to the builder"


def _random_init_section(info: Mapping[str, Any]) -> list[str]:
    entries = info.get("random_init")
    if entries is None:
        return ["Unknown (the model was not built by `mega2bart build`)."]
    if not entries:
        return ["None: every weight was loaded from a checkpoint."]
    lines = [
        f"{len(entries)} tensors, {info.get('random_init_parameters', 0):,} parameters were randomly initialised "
        "and need training:",
        "",
    ]
    for part in ("encoder", "decoder"):
        source = info.get(part) or {}
        if source.get("kind") == "config":
            chosen = [e for e in entries if e["name"].startswith(part + ".")]
            lines.append(f"- `{part}.*`: all {len(chosen)} tensors, {sum(e['numel'] for e in chosen):,} parameters")
    whole_parts = tuple(f"{part}." for part in ("encoder", "decoder") if (info.get(part) or {}).get("kind") == "config")
    listed = [e for e in entries if not e["name"].startswith(whole_parts or ("\0",))]
    if len(listed) > 40:
        lines.append(f"- {len(listed)} further tensors: see `mega2bart_build.json`")
    else:
        for entry in listed:
            note = " (unused: the decoder reads the hidden states, not the pooler)" if ".pooler." in entry["name"] else ""
            lines.append(f"- `{entry['name']}`: {entry['numel']:,}{note}")
    return lines


def render_model_card(info: Mapping[str, Any]) -> str:
    """Markdown with YAML front matter: provenance, parameters, random weights, generation, loading."""
    encoder, decoder, tokenizer = info.get("encoder") or {}, info.get("decoder") or {}, info.get("tokenizer") or {}
    base_models = [s["name"] for s in (encoder, decoder) if s.get("kind") == "hub"]
    front = ["---", "library_name: transformers", "pipeline_tag: summarization",
             "tags:", "- mega2bart", "- mega", "- bart", "- encoder-decoder", "- long-document", "- summarization"]
    if base_models:
        front += ["base_model:"] + [f"- {name}" for name in base_models]
    front.append("---")

    arch = info.get("architecture", {})
    enc_arch, dec_arch = arch.get("encoder", {}), arch.get("decoder", {})
    params = info.get("parameters") or {}
    context = info.get("context_length")
    generation = info.get("generation") or {}
    untrained = bool(info.get("random_init"))

    lines = [
        *front,
        "",
        "# mega2bart: MEGA encoder + BART decoder",
        "",
        f"A `transformers` `EncoderDecoderModel` built by mega2bart "
        f"{info.get('mega2bart_version', '')}: a {enc_arch.get('model_type', '?').upper()} encoder "
        f"({enc_arch.get('layers')} layers, width {enc_arch.get('hidden_size')}"
        + (f", chunked attention of {enc_arch.get('chunk_size')} tokens" if enc_arch.get("chunk_size") else "")
        + f") joined to a {dec_arch.get('model_type', '?')} decoder ({dec_arch.get('layers')} layers, width "
        f"{dec_arch.get('hidden_size')}) through cross-attention"
        + (", with a linear `enc_to_dec_proj` between the widths." if arch.get("enc_to_dec_proj") else "."),
        "",
    ]
    if untrained and info.get("random_init_parameters") == params.get("total"):
        lines += [
            "> **Random init: no pretrained weights at all.** Every weight is random (built from configs): "
            "the shapes are real, the summaries are noise. Use it for benchmarks and smoke tests, or train it.",
            "",
        ]
    elif untrained:
        lines += [
            "> **Not fine-tuned.** Some weights are random (listed below): fine-tune on a summarisation "
            "dataset before expecting useful summaries.",
            "",
        ]
    lines += [
        "## Provenance",
        "",
        "| part | source | class |",
        "|---|---|---|",
        f"| encoder | {_source_line(encoder)} | `{encoder.get('model_class', '?')}` |",
        f"| decoder | {_source_line(decoder)} | `{decoder.get('model_class', '?')}` |",
        f"| tokenizer | {_source_line(tokenizer)} | |",
        "",
        f"Context: inputs up to **{context:,} tokens** (tokenizer `model_max_length`); any length up to that works, "
        "the encoder pads to a multiple of its chunk size internally." if isinstance(context, int) else "",
        "",
        "## Parameters",
        "",
        "| part | parameters |",
        "|---|---|",
        *[f"| {part} | {count:,} |" for part, count in params.items()],
        "",
        "Tied weights (the decoder's LM head = its input embeddings) are counted once.",
        "",
        "## Randomly initialised weights",
        "",
        *_random_init_section(info),
        "",
        "## Generation settings (`generation_config.json`)",
        "",
        "```json",
        json.dumps({k: v for k, v in generation.items() if v is not None}, indent=2, sort_keys=True),
        "```",
        "",
        "Override per call, e.g. `model.generate(**inputs, max_new_tokens=256, num_beams=2)`.",
        "",
        "## How to load",
        "",
        "With mega2bart installed (`pip install mega2bart`):",
        "",
        "```python",
        "import mega2bart  # registers MEGA with the transformers Auto classes",
        "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
        "",
        'model = AutoModelForSeq2SeqLM.from_pretrained("PATH")',
        'tokenizer = AutoTokenizer.from_pretrained("PATH")',
        'inputs = tokenizer(long_document, return_tensors="pt", truncation=True)',
        "summary_ids = model.generate(**inputs)",
        "print(tokenizer.decode(summary_ids[0], skip_special_tokens=True))",
        "",
        "# or: pipeline(\"summarization\") (transformers 5 removed the task; mega2bart restores it)",
        "from transformers import pipeline",
        'summarizer = pipeline("summarization", model="PATH")',
        "print(summarizer(long_document)[0][\"summary_text\"])",
        "",
        "# for training: the same weights with a loss that is right under gradient accumulation",
        'model, tokenizer = mega2bart.load_mega2bart("PATH")',
        "```",
        "",
        "Without mega2bart, the MEGA code shipped in this directory is used as remote code:",
        "",
        "```python",
        "from transformers import AutoModelForSeq2SeqLM",
        'model = AutoModelForSeq2SeqLM.from_pretrained("PATH", trust_remote_code=True)',
        "```",
        "",
    ]
    return "\n".join(line for line in lines if line is not None) + "\n"


__all__ = ["render_model_card"]
