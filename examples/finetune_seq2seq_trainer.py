"""Fine-tune mega2bart with transformers' `Seq2SeqTrainer` directly (what `mega2bart train` wraps).

    python examples/finetune_seq2seq_trainer.py --model runs/mega2bart-large     # GovReport, 16k inputs, GPU
    python examples/finetune_seq2seq_trainer.py --preset tiny --dataset aclsum \
        --max-samples 8 --max-source-length 256 --max-target-length 32 --max-steps 4   # offline, CPU

Long-document settings: batch 1 with gradient accumulation, gradient checkpointing, bf16 where the GPU
has it, ROUGE (greedy) after training, not during it. The collator pads to the longest in the batch (times
8); MEGA pads inputs to a multiple of its chunk size inside.
"""

from __future__ import annotations

import argparse
import copy

import torch
from datasets import DatasetDict
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

from mega2bart.builder import build_mega2bart, load_mega2bart, preset_kwargs, save_mega2bart
from mega2bart.data import SummarizationCollator, load_summarization_dataset, tokenize_dataset
from mega2bart.metrics import build_compute_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="directory from `mega2bart build`; default: build --preset now")
    parser.add_argument("--preset", choices=["tiny", "base", "large"], default="large")
    parser.add_argument("--dataset", default="ccdv/govreport-summarization", help='Hub name or "aclsum" (offline)')
    parser.add_argument("--max-samples", type=int, help="rows per split")
    parser.add_argument("--max-source-length", type=int, default=16384)
    parser.add_argument("--max-target-length", type=int, default=512)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=16)
    parser.add_argument("--eval-max-new-tokens", type=int, default=256, help="greedy summaries for ROUGE")
    parser.add_argument("--output-dir", default="runs/seq2seq-trainer")
    args = parser.parse_args()

    model, tokenizer = load_mega2bart(args.model) if args.model else build_mega2bart(**preset_kwargs(args.preset))
    tokenizer.padding_side = "right"
    raw, _ = load_summarization_dataset(args.dataset, max_samples=args.max_samples)
    data, _ = tokenize_dataset(
        DatasetDict(train=raw["train"], validation=raw["validation"]), tokenizer,
        args.max_source_length, args.max_target_length,
    )
    collator = SummarizationCollator(tokenizer, model=model, pad_to_multiple_of=8)

    training_args = Seq2SeqTrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=1, per_device_eval_batch_size=1,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=5e-5, max_steps=args.max_steps,
        warmup_steps=0.05,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        activation_checkpointing=True,  # transformers 5 name of gradient_checkpointing
        train_sampling_strategy="group_by_length",
        remove_unused_columns=False,  # keeps the `length` column for the sampler; the collator drops text
        predict_with_generate=True,
        eval_accumulation_steps=8,
        logging_steps=max(1, min(10, args.max_steps // 2)),
        save_strategy="no", report_to="none",
    )
    trainer = Seq2SeqTrainer(
        model=model, args=training_args, train_dataset=data["train"], eval_dataset=data["validation"],
        data_collator=collator, processing_class=tokenizer, compute_metrics=build_compute_metrics(tokenizer),
    )
    trainer.train()
    # evaluate() writes every generation default (max_length=20, ...) into model.generation_config: keep the
    # model's inference settings (512 new tokens, 4 beams) out of harm's way so the saved model has them
    inference_generation = copy.deepcopy(trainer.model.generation_config)
    metrics = trainer.evaluate(max_new_tokens=args.eval_max_new_tokens, min_new_tokens=1, num_beams=1)
    trainer.model.generation_config = inference_generation
    print("eval ROUGE-1/2/L/Lsum: " + "/".join(f"{metrics[f'eval_{k}']:.2f}" for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")))
    path = save_mega2bart(trainer.model, tokenizer, f"{args.output_dir}/final", overwrite=True)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
