"""Continued masked-language-model pretraining of a MEGA encoder on raw text.

One `PretrainConfig` -> `run_pretraining(config)` -> `<output_dir>/final`, a `MegaForMaskedLM`
plus tokenizer that `MegaModel.from_pretrained` and `mega2bart build --encoder` accept.

- Text: local .txt/.md/.html/.pdf files (one document each), .jsonl files (one document per line, field
  `text_column`), directories of those (all read by `mega2bart.documents`), a Hugging Face
  `datasets` name, or the built-ins "aclsum" (full paper texts, offline, `pip install
  aclsum==0.1.2`) and "gensim-wiki" (the shortened English Wikipedia dump shipped in the gensim
  4.4.0 wheel).
- Packing: documents are tokenized once, joined with `</s>` into one stream and cut into
  sequences `<s>` + (max_length - 1) tokens, so no position is padding. The tail shorter than
  a sequence is dropped.
- Streaming (`streaming=True`, for corpora that do not fit on disk): the dataset is opened with
  `datasets` streaming and the text files are read one at a time; documents are tokenized and
  packed as they are read (`PackedStream`, the same sequences in the same order), and each
  phase's step count ends it (the stream starts again if it runs out first).
- Masking: `DataCollatorForLanguageModeling` with `mlm_probability = mask_ratio` (default 0.4,
  the "should you mask 15%?" finding for long-context MLM; 80/10/10 replacement).
- Phases: `phases="2048:0.4,4096:0.3"` (length:mask_ratio[:steps]) run one after the other on the
  same weights (a fresh optimiser per phase); steps not given split `max_steps` evenly. Each phase
  writes `<output_dir>/phase<i>-len<L>/` (Trainer checkpoints, `model/`, `phase.json`).
- Resume (`resume=True`): finished phases (with `phase.json`) are skipped, the current one resumes
  from its newest complete `checkpoint-*` (weights, optimiser, scheduler, data position). The MLM masks
  after the resume are not those an uninterrupted run would draw: close, not bit-identical.
- `metrics.json` records per phase the train loss and the MLM loss of a fixed masked batch of
  training sequences before and after the phase (a sanity check, not a held-out evaluation).

One module per concern (as `mega2bart.training`):

- `config`: `PretrainConfig`, its checks, its phases (`parse_phases`) and its `TrainingArguments`.
- `text`: the documents (files, a dataset, the built-ins) and their packing, up front or streamed.
- `model`: the MEGA MLM model and the tokenizer a run starts from, and their compatibility checks.
- `run`: `run_pretraining`, the phases one after the other.
"""

from __future__ import annotations

from .config import CONFIG_FILE, FINAL_DIR, METRICS_FILE, PHASE_FILE, TINY_ENCODER, Phase, PretrainConfig, parse_phases
from .model import check_compatible, load_mlm_model, load_pretrain_tokenizer
from .run import run_pretraining
from .text import BUILTIN_DATASETS, GENSIM_WIKI_FILE, PackedStream, iter_documents, load_documents, pack_documents

__all__ = [
    "BUILTIN_DATASETS",
    "CONFIG_FILE",
    "FINAL_DIR",
    "GENSIM_WIKI_FILE",
    "METRICS_FILE",
    "PHASE_FILE",
    "TINY_ENCODER",
    "PackedStream",
    "Phase",
    "PretrainConfig",
    "check_compatible",
    "iter_documents",
    "load_documents",
    "load_mlm_model",
    "load_pretrain_tokenizer",
    "pack_documents",
    "parse_phases",
    "run_pretraining",
]
