"""Fine-tune MEGA heads with transformers' Trainer where mega2bart cannot be imported (run by test_remote_code.py).

    python -I -S example_script_runner.py REPORT SITE_PACKAGES PACKAGE_DIR remote_finetune_worker.py SPEC.json

example_script_runner.py makes the process (no PYTHONPATH, no site-packages hook, a meta-path finder that refuses
"mega2bart") and reports what it proved. Each job loads a folder with `AutoModelFor*` and `trust_remote_code=True`,
trains a few steps, saves with `Trainer.save_model`, reloads the output the same way and compares outputs;
everything measured goes to SPEC's "results" file as JSON.
"""

import json
import sys
import traceback

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainingArguments

SPEC = json.loads(open(sys.argv[1]).read())

torch.set_num_threads(1)
LENGTH = 24
TEXTS = [
    "a good film with a fine cast",
    "a bad film, dull and long",
    "good acting and a clever plot",
    "bad acting, a plot full of holes",
    "the best thing I saw this year",
    "the worst evening in a long time",
    "fine music and a good ending",
    "a long, bad and boring story",
]
LABELS = [1, 0, 1, 0, 1, 0, 1, 0]
AUTO_CLASS = {
    "sentence": "AutoModelForSequenceClassification",
    "pair": "AutoModelForSequenceClassification",
    "token": "AutoModelForTokenClassification",
    "qa": "AutoModelForQuestionAnswering",
    "choice": "AutoModelForMultipleChoice",
    "mlm": "AutoModelForMaskedLM",
    "bare": "AutoModel",
}


def encode(tokenizer, first, second=None):
    return tokenizer(first, second, padding="max_length", max_length=LENGTH, truncation=True)


def examples(head, tokenizer):
    """A few training examples for `head`, each a dict of equal-length lists."""
    rows = []
    for index, (text, label) in enumerate(zip(TEXTS, LABELS, strict=True)):
        if head == "sentence":
            row = {**encode(tokenizer, text), "labels": label}
        elif head == "pair":
            row = {**encode(tokenizer, text, TEXTS[(index + 1) % len(TEXTS)]), "labels": label}
        elif head == "token":
            row = dict(encode(tokenizer, text))
            # label 1 on the first half of the words, -100 on the special tokens and the padding
            row["labels"] = [
                -100 if (mask == 0 or i == 0 or ids == tokenizer.eos_token_id) else int(i < 4)
                for i, (ids, mask) in enumerate(zip(row["input_ids"], row["attention_mask"], strict=True))
            ]
        elif head == "qa":
            row = dict(encode(tokenizer, "which film?", text))
            answer = row["input_ids"].index(tokenizer.eos_token_id) + 3  # a word of the context
            row.update(start_positions=answer, end_positions=answer + 1)
        elif head == "choice":
            pair = encode(tokenizer, ["the film was", "the film was"], [text, TEXTS[(index + 1) % len(TEXTS)]])
            row = {**pair, "labels": index % 2}  # (choices, length) per example
        elif head in ("mlm", "bare"):
            row = dict(encode(tokenizer, text))
        rows.append(row)
    return rows


def batch(rows):
    return {key: torch.tensor([row[key] for row in rows]) for key in ("input_ids", "attention_mask")}


def outputs(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    if "start_logits" in out:
        return torch.stack([out.start_logits, out.end_logits], -1)
    if "logits" in out:
        return out.logits[..., :50]  # (an MLM's: the first 50 of the vocabulary)
    return out.last_hidden_state


def run(job, work):
    head, folder, name = job["head"], job["folder"], job["name"]
    auto = getattr(transformers, AUTO_CLASS[head])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    kwargs = {"num_labels": 2} if head in ("sentence", "pair", "token") else {}
    # as transformers' example scripts load: the config first (with the task's settings), then the model with it
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True, **kwargs)
    model = auto.from_pretrained(folder, config=config, trust_remote_code=True)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    rows = examples(head, tokenizer)
    out_dir = f"{work}/{name}-trained"
    result = {"class": f"{type(model).__module__}.{type(model).__name__}", "config": type(model.config).__module__}
    if head != "bare":
        args = TrainingArguments(
            output_dir=f"{work}/{name}-run",
            max_steps=3,
            per_device_train_batch_size=4,
            learning_rate=5e-3,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3) if head == "mlm" else None
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator)
        result["train_loss"] = trainer.train().training_loss
        trainer.save_model(out_dir)
        tokenizer.save_pretrained(out_dir)
    else:
        model.save_pretrained(out_dir)
    after = model.state_dict()
    result["changed"] = sum(not torch.equal(before[key], after[key]) for key in before)
    result["tensors"] = len(before)
    model.eval()
    inputs = batch(rows[:2])
    if head == "choice":
        inputs = {key: value.view(1, 2, 2, LENGTH)[0] for key, value in inputs.items()}  # (batch, choices, L)
    expected = outputs(model, inputs)
    reloaded = auto.from_pretrained(out_dir, trust_remote_code=True).eval()
    result["reloaded_class"] = f"{type(reloaded).__module__}.{type(reloaded).__name__}"
    result["reload_max_diff"] = float((outputs(reloaded, inputs) - expected).abs().max())
    result["output_dir"] = out_dir
    result["inputs"] = {key: value.tolist() for key, value in inputs.items()}
    result["outputs"] = expected.tolist()
    return result


def main():
    results = {"jobs": {}}
    for job in SPEC["jobs"]:
        try:
            results["jobs"][job["name"]] = run(job, SPEC["work"])
        except Exception:
            results["jobs"][job["name"]] = {"error": traceback.format_exc()[-3000:]}
    with open(SPEC["results"], "w") as handle:
        json.dump(results, handle)


main()
