"""Pretrain on the source domain: masked-LM (domain adaptation), a supervised classifier on
the labelled source, or the first then the second. Writes models/source/."""

from __future__ import annotations

import tempfile

from datasets import DatasetDict
from transformers import (
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tasks.classification.model import load_classifier, load_tokenized, new_classifier
from tasks.classification.train import SCORED_BY_F1
from tasks.common.models import SCRATCH, resolve_init, save_model
from tasks.common.paths import Paths
from tasks.common.training import TrainJob, finish, fingerprint_of, history, train
from tasks.params import Params

def new_mlm_model(p: Params, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    if p.model.init == SCRATCH:
        template = new_classifier(SCRATCH, p.task.labels, p.model.scratch, tokenizer).config
        return BertForMaskedLM(BertConfig(**{k: v for k, v in template.to_dict().items() if k != "architectures"}))
    return AutoModelForMaskedLM.from_pretrained(resolve_init(p.model.init))


def pretrain_job(p: Params, paths: Paths, splits: DatasetDict, tokenizer, checkpoint: str, fingerprint: dict, **options) -> TrainJob:
    """A source-domain training run: its checkpoints under `checkpoint`, logs in dvclive/pretrain."""
    return TrainJob(
        params=options.pop("params", p.pretrain), train=splits["train"], val=splits["val"], tokenizer=tokenizer,
        checkpoint_dir=paths.checkpoints(checkpoint), live_dir=paths.live_dir("pretrain"), seed=p.seed, device=p.device,
        fingerprint=fingerprint, **options,
    )


def mlm_job(p: Params, paths: Paths, splits: DatasetDict, tokenizer, max_steps: int) -> TrainJob:
    return pretrain_job(
        p, paths, splits.remove_columns("labels"), tokenizer, "pretrain-mlm",
        fingerprint_of(p.model, p.pretrain, p.seed, max_steps, len(splits["train"])),
        params=p.pretrain.model_copy(update={"max_steps": max_steps}),
        # selected and stopped on val loss (TrainJob defaults)
        collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=p.pretrain.mlm_probability, seed=p.seed),
    )


def supervised_job(p: Params, paths: Paths, splits: DatasetDict, tokenizer) -> TrainJob:
    return pretrain_job(
        p, paths, splits, tokenizer, "pretrain", fingerprint_of(p.model, p.pretrain, p.seed, len(splits["train"])),
        **SCORED_BY_F1,
    )


def run_mlm(p: Params, paths: Paths, splits: DatasetDict, tokenizer, max_steps: int) -> PreTrainedModel:
    job = mlm_job(p, paths, splits, tokenizer, max_steps)
    trainer = train(new_mlm_model(p, tokenizer), job)
    finish(job)
    return trainer.model


def run(p: Params, paths: Paths) -> dict:
    splits, tokenizer = load_tokenized(paths, "source")
    mode = p.pretrain.mode
    log: dict = {"mode": mode, "init": p.model.init, "source_train_rows": len(splits["train"])}
    if mode == "mlm":
        model = run_mlm(p, paths, splits, tokenizer, p.pretrain.max_steps)
        save_model(model, tokenizer, paths.source_model, {"pretrain.json": log})
        return log
    if mode == "mlm+supervised":
        adapted = run_mlm(p, paths, splits, tokenizer, p.pretrain.mlm_max_steps)
        with tempfile.TemporaryDirectory() as tmp:
            adapted.save_pretrained(tmp)
            model = load_classifier(tmp, p.task.labels)
    else:
        model = new_classifier(p.model.init, p.task.labels, p.model.scratch, tokenizer)
    job = supervised_job(p, paths, splits, tokenizer)
    trainer = train(model, job)
    log["val"] = trainer.evaluate()
    log["history"] = history(trainer)
    save_model(trainer.model, tokenizer, paths.source_model, {"pretrain.json": log})
    finish(job)
    return log
