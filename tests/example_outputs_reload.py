"""Reload the outputs of transformers' example scripts and recompute what each script saved (test_example_scripts.py).

Run through example_script_runner.py (so mega2bart cannot be imported):

    python -I -S example_script_runner.py REPORT SITE_PACKAGES PACKAGE_DIR example_outputs_reload.py SPEC.json

Each job names a script's output folder, its data and its max_seq_length. The folder is loaded with
`AutoModelFor*.from_pretrained(DIR, trust_remote_code=True)` and its tokenizer, the data is tokenized as the
script tokenizes it, and what the script saved is recomputed: run_glue's predictions (predict_results_None.txt)
and accuracy, run_ner's predictions (predictions.txt), run_swag's accuracy, the start/end logits run_qa's
post-processing kept (predict_nbest_predictions.json); run_mlm's evaluation masks at random, so for it (and for
every job) the outputs on one fixed input are recorded for the test to compare with mega2bart's own classes.
"""

import json
import sys
import traceback

import torch
import transformers
from transformers import AutoTokenizer

torch.set_num_threads(1)
SPEC = json.loads(open(sys.argv[1]).read())
AUTO_CLASS = {
    "glue": "AutoModelForSequenceClassification",
    "ner": "AutoModelForTokenClassification",
    "swag": "AutoModelForMultipleChoice",
    "qa": "AutoModelForQuestionAnswering",
    "mlm": "AutoModelForMaskedLM",
}


def rows(path):
    """The records of a JSON-lines file, or of the "data" list of a SQuAD-style JSON file."""
    with open(path) as handle:
        text = handle.read()
    if text.startswith('{"data"'):
        return json.loads(text)["data"]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def logits(model, encoded):
    with torch.no_grad():
        out = model(**{key: torch.as_tensor(value) for key, value in encoded.items()})
    if "start_logits" in out:
        return torch.stack([out.start_logits, out.end_logits], -1)
    return out.logits


def check_glue(job, model, tokenizer, out_dir):
    data = rows(job["data"])
    first = [row.get("sentence1", row.get("sentence")) for row in data]
    second = [row["sentence2"] for row in data] if "sentence2" in data[0] else None
    encoded = tokenizer(first, second, padding="max_length", max_length=job["length"], truncation=True)
    predictions = logits(model, encoded).argmax(-1).tolist()
    with open(f"{out_dir}/predict_results_None.txt") as handle:
        saved = [int(line.split("\t")[1]) for line in handle.read().splitlines()[1:]]
    accuracy = sum(int(p == row["label"]) for p, row in zip(predictions, data, strict=True)) / len(data)
    return {"recomputed": predictions, "saved": saved, "accuracy": accuracy}


def check_ner(job, model, tokenizer, out_dir):
    recomputed = []
    for row in rows(job["data"]):
        encoded = tokenizer(row["tokens"], is_split_into_words=True, truncation=True, max_length=job["length"])
        predicted = logits(model, {key: [value] for key, value in encoded.items()})[0].argmax(-1).tolist()
        words, labels, previous = encoded.word_ids(), [], None
        for position, word in enumerate(words):
            if word is not None and word != previous:  # the first token of each word carries its label
                labels.append(model.config.id2label[predicted[position]])
            previous = word
        recomputed.append(" ".join(labels))
    with open(f"{out_dir}/predictions.txt") as handle:
        return {"recomputed": recomputed, "saved": handle.read().splitlines()}


def check_swag(job, model, tokenizer, out_dir):
    data, hits = rows(job["data"]), 0
    for row in data:
        endings = [f"{row['sent2']} {row[f'ending{i}']}" for i in range(4)]
        encoded = tokenizer(
            [row["sent1"]] * 4, endings, truncation=True, max_length=job["length"], padding="max_length"
        )
        hits += int(logits(model, {key: [value] for key, value in encoded.items()})[0].argmax().item() == row["label"])
    with open(f"{out_dir}/eval_results.json") as handle:
        return {"recomputed": hits / len(data), "saved": json.load(handle)["eval_accuracy"]}


def check_qa(job, model, tokenizer, out_dir):
    """Every start/end logit run_qa kept for the first example's n-best answers is one the reloaded model gives."""
    example = rows(job["data"])[0]
    encoded = tokenizer(
        example["question"].lstrip(),
        example["context"],
        truncation="only_second",
        max_length=job["length"],
        stride=job["doc_stride"],
        return_overflowing_tokens=True,
        padding="max_length",
    )
    encoded = {key: encoded[key] for key in ("input_ids", "attention_mask")}
    start, end = logits(model, encoded).unbind(-1)
    with open(f"{out_dir}/predict_nbest_predictions.json") as handle:
        nbest = json.load(handle)[example["id"]]
    distance = max(
        max(float((start - answer["start_logit"]).abs().min()), float((end - answer["end_logit"]).abs().min()))
        for answer in nbest
    )
    return {"answers": len(nbest), "max_distance": distance, "best": nbest[0]["text"]}


def check_mlm(job, model, tokenizer, out_dir):
    return {}


def run(job):
    out_dir = job["output_dir"]
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    auto = getattr(transformers, AUTO_CLASS[job["script"]])
    model = auto.from_pretrained(out_dir, trust_remote_code=True).eval()
    result = {"class": f"{type(model).__module__}.{type(model).__name__}"}
    result.update(globals()[f"check_{job['script']}"](job, model, tokenizer, out_dir))
    encoded = tokenizer(["a good film with a fine cast", "a long and boring story"], padding=True)
    if job["script"] == "swag":
        encoded = {key: [value] for key, value in encoded.items()}  # (1 example, 2 choices, length)
    out = logits(model, encoded)
    result["inputs"] = {key: list(value) for key, value in encoded.items() if key in ("input_ids", "attention_mask")}
    result["outputs"] = (out[..., :50] if job["script"] == "mlm" else out).tolist()
    return result


results = {}
for job in SPEC["jobs"]:
    try:
        results[job["name"]] = run(job)
    except Exception:  # recorded per job, so one failure does not hide the others
        results[job["name"]] = {"error": traceback.format_exc()[-3000:]}
with open(SPEC["results"], "w") as handle:
    json.dump(results, handle)
