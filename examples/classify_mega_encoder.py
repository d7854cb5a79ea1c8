"""Fine-tune the MEGA encoder alone on a classification task (`MegaForSequenceClassification`).

    python examples/classify_mega_encoder.py                            # seed checkpoint from the Hub
    python examples/classify_mega_encoder.py --preset tiny --max-steps 4 --max-length 128   # offline

The task is made from the offline ACLSum papers (needs `pip install aclsum==0.1.2`): is a passage
a paper's abstract (1) or an equally long excerpt of its body (0)? The classifier head on the
<s> token is new (random); the encoder weights come from the MLM checkpoint.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

import mega2bart  # noqa: F401  registers MEGA with AutoModelForSequenceClassification
from mega2bart.data import load_summarization_dataset
from mega2bart.presets import DEFAULT_ENCODER


def abstract_or_body(split: Dataset) -> Dataset:
    rows: dict[str, list] = {"text": [], "label": []}
    for paper in split:
        words = paper["document"].split()
        n = len(paper["summary"].split())
        start = max(0, len(words) // 2 - n // 2)  # an excerpt from the middle, as long as the abstract
        rows["text"] += [paper["summary"], " ".join(words[start : start + n])]
        rows["label"] += [1, 0]
    return Dataset.from_dict(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_ENCODER, help="MEGA checkpoint (Hub id or directory)")
    parser.add_argument("--preset", choices=["tiny"], help="tiny: random offline encoder")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--max-samples", type=int, help="papers per split")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--output-dir", default="runs/classify")
    args = parser.parse_args()

    if args.preset == "tiny":
        from mega2bart.models.mega import MegaConfig, MegaForSequenceClassification
        from mega2bart.presets import TINY_ENCODER
        from mega2bart.tokenization import load_offline_tokenizer

        torch.manual_seed(0)
        model, tokenizer = MegaForSequenceClassification(MegaConfig(**TINY_ENCODER, num_labels=2)), load_offline_tokenizer()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    papers, _ = load_summarization_dataset("aclsum", max_samples=args.max_samples)
    data = {split: abstract_or_body(papers[split]) for split in ("train", "validation")}
    data = {k: v.map(lambda b: tokenizer(b["text"], truncation=True, max_length=args.max_length), batched=True)
            for k, v in data.items()}

    def accuracy(prediction) -> dict[str, float]:
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            args.output_dir, per_device_train_batch_size=8, learning_rate=1e-4 if args.preset else 3e-5,
            max_steps=args.max_steps, warmup_steps=0.1, logging_steps=max(1, args.max_steps // 4),
            bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(), save_strategy="no", report_to="none",
        ),
        train_dataset=data["train"], eval_dataset=data["validation"],
        processing_class=tokenizer, compute_metrics=accuracy,  # a tokenizer: the Trainer pads with DataCollatorWithPadding
    )
    trainer.train()
    print(f"validation accuracy: {trainer.evaluate()['eval_accuracy']:.3f} on {len(data['validation'])} passages")
    trainer.save_model(f"{args.output_dir}/final")


if __name__ == "__main__":
    main()
