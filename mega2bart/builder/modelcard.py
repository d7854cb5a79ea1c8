"""The model card (README.md) of a saved mega2bart model, rendered from its `ModelDescription`."""

from __future__ import annotations

import json

from .describe import BUILD_INFO_FILE, ModelDescription

_LISTED_TENSORS = 40
"""Random-init tensors listed one by one in the card; the rest are counted (all are in mega2bart_build.json)."""


def _random_init_section(description: ModelDescription) -> list[str]:
    summary, *details = description.random_init_lines(markdown=True, limit=_LISTED_TENSORS)
    if description.build is None or not description.build.random_init:
        return [summary[0].upper() + summary[1:] + "."]
    return [f"Randomly initialised (they need training): {summary}.", "", *details]


def _provenance_table(description: ModelDescription) -> list[str]:
    build = description.build
    if build is None:
        return [f"Unknown: the directory has no `{BUILD_INFO_FILE}` (the model was not built by `mega2bart build`)."]
    rows = ["| part | source | class |", "|---|---|---|"]
    for part in ("encoder", "decoder", "tokenizer"):
        source = build.source(part)
        model_class = f"`{source.model_class or '?'}`" if part != "tokenizer" else ""
        rows.append(f"| {part} | {source.describe(markdown=True)} | {model_class} |")
    if build.seed is not None:
        rows.append(f"| seed | {build.seed} | random-init weights drawn with `torch.manual_seed({build.seed})` |")
    if build.weights is not None:
        rows.append(
            f"| weights | `{build.weights.get('fingerprint')}` | fingerprint of the built weights "
            f"({build.weights.get('dtype')}): `mega2bart info` says whether a folder's weights changed since |"
        )
    return rows


def render_model_card(description: ModelDescription) -> str:
    """Markdown with YAML front matter: provenance, parameters, random weights, generation, loading."""
    build = description.build
    sources = [build.encoder, build.decoder] if build is not None else []
    base_models = [source.name for source in sources if source.kind == "hub"]
    front = [
        "---",
        "library_name: transformers",
        "pipeline_tag: summarization",
        "tags:",
        "- mega2bart",
        "- mega",
        "- bart",
        "- encoder-decoder",
        "- long-document",
        "- summarization",
    ]
    if base_models:
        front += ["base_model:"] + [f"- {name}" for name in base_models]
    front.append("---")

    arch = description.architecture
    enc_arch, dec_arch = arch.encoder, arch.decoder
    params = description.parameters or {}
    context = description.context_length
    version = build.mega2bart_version if build is not None else ""

    lines = [
        *front,
        "",
        "# mega2bart: MEGA encoder + BART decoder",
        "",
        f"A `transformers` `EncoderDecoderModel` built by mega2bart "
        f"{version}: a {(enc_arch.model_type or '?').upper()} encoder "
        f"({enc_arch.layers} layers, width {enc_arch.hidden_size}"
        + (f", chunked attention of {enc_arch.chunk_size} tokens" if enc_arch.chunk_size else "")
        + f") joined to a {dec_arch.model_type or '?'} decoder ({dec_arch.layers} layers, width "
        f"{dec_arch.hidden_size}) through cross-attention"
        + (", with a linear `enc_to_dec_proj` between the widths." if arch.enc_to_dec_proj else "."),
        "",
    ]
    if build is not None and build.all_random:
        lines += [
            "> **Random init: no pretrained weights at all.** Every weight is random (built from configs): "
            "the shapes are real, the summaries are noise. Use it for benchmarks and smoke tests, or train it.",
            "",
        ]
    elif build is not None and build.random_init:
        lines += [
            "> **Not fine-tuned.** Some weights are random (listed below): fine-tune on a summarisation "
            "dataset before expecting useful summaries.",
            "",
        ]
    lines += [
        "## Provenance",
        "",
        *_provenance_table(description),
        "",
        f"Context: inputs up to **{context:,} tokens** (tokenizer `model_max_length`); any length up to that works, "
        "the encoder pads to a multiple of its chunk size internally."
        if isinstance(context, int)
        else "",
        "",
        *(
            [f"Encoder EMA init: {build.encoder_ema_init} (`mega2bart info` prints each layer's EMA reach).", ""]
            if build is not None and build.encoder_ema_init
            else []
        ),
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
        *_random_init_section(description),
        "",
        "## Generation settings (`generation_config.json`)",
        "",
        "```json",
        json.dumps({k: v for k, v in description.generation.items() if v is not None}, indent=2, sort_keys=True),
        "```",
        "",
        "Lengths count the decoder start token (`max_length` 513 = 512 new tokens), as in BART's summarisation "
        "checkpoints, so a caller's `max_length` (e.g. Seq2SeqTrainer's `generation_max_length`) replaces them. "
        "Override per call, e.g. `model.generate(**inputs, max_length=257, num_beams=2)`.",
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
        '# or: pipeline("summarization") (transformers 5 removed the task; mega2bart restores it)',
        "from transformers import pipeline",
        'summarizer = pipeline("summarization", model="PATH")',
        'print(summarizer(long_document)[0]["summary_text"])',
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
