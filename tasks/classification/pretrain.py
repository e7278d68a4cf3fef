"""Pretrain on the source domain: masked-LM (domain adaptation), a supervised classifier on
the labelled source, or the first then the second. Writes models/source/."""

from __future__ import annotations

import sys
import tempfile

import transformers
from datasets import DatasetDict, concatenate_datasets
from transformers import (
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tasks.classification.model import POOLING_KEY, load_classifier, load_tokenized, new_classifier
from tasks.classification.train import SCORED_BY_F1
from tasks.common.errors import HandoffError
from tasks.common.models import SCRATCH, resolve_init, save_model
from tasks.common.paths import Paths
from tasks.common.training import TrainJob, finish, fingerprint_of, history, train
from tasks.params import Params, domain_labels

MLM_HEAD_FROM_INIT = "from the init"
MLM_HEAD_FRESH = "fresh (the init has none)"
MLM_HEAD_SCRATCH = "fresh (init scratch)"


def new_mlm_model(p: Params, tokenizer: PreTrainedTokenizerBase) -> tuple[PreTrainedModel, str]:
    """The masked-LM to adapt, and where its MLM head comes from (pretrain.json's `mlm_head`)."""
    if p.model.init == SCRATCH:
        template = new_classifier(SCRATCH, p.task.labels, p.model.scratch, tokenizer, pooling=p.model.pooling).config
        head_keys = ("architectures", POOLING_KEY)  # an MLM has no classifier head
        config = BertConfig(**{k: v for k, v in template.to_dict().items() if k not in head_keys})
        return BertForMaskedLM(config), MLM_HEAD_SCRATCH
    model, info = AutoModelForMaskedLM.from_pretrained(resolve_init(p.model.init), output_loading_info=True)
    return model, mlm_head_origin(model, info["missing_keys"], p.model.init)


def mlm_head_origin(model: PreTrainedModel, missing_keys: list[str], init: str) -> str:
    """Whether the init's checkpoint held the MLM head (`cls.predictions.*` for BERT: every
    weight outside the encoder). A sentence-embedding checkpoint such as the packaged MiniLM
    holds the encoder only: its head starts untrained, said on stderr and in pretrain.json."""
    encoder = model.base_model_prefix + "."
    head_missing = sorted(key for key in missing_keys if not key.startswith(encoder))
    if not head_missing:
        return MLM_HEAD_FROM_INIT
    print(
        f"pretrain: warning: model.init {init!r} has no masked-LM head ({len(head_missing)} weights missing, "
        f"e.g. {head_missing[0]}): it starts untrained, so MLM needs enough steps to train it before the "
        "encoder adapts (pretrain.max_steps, or mlm_max_steps in mlm+supervised)",
        file=sys.stderr, flush=True,
    )
    return MLM_HEAD_FRESH


def pretrain_job(p: Params, paths: Paths, splits: DatasetDict, tokenizer, checkpoint: str, fingerprint: dict, **options) -> TrainJob:
    """A source-domain training run: its checkpoints under `checkpoint`, logs in dvclive/pretrain."""
    return TrainJob(
        params=options.pop("params", p.pretrain), train=splits["train"], val=splits["val"], tokenizer=tokenizer,
        checkpoint_dir=paths.checkpoints(checkpoint), live_dir=paths.live_dir("pretrain"), seed=p.seed, device=p.device,
        fingerprint=fingerprint, **options,
    )


def text_only(splits: DatasetDict) -> DatasetDict:
    return splits.remove_columns("labels") if "labels" in splits["train"].column_names else splits


def mlm_text(p: Params, paths: Paths, splits: DatasetDict) -> DatasetDict:
    """What the MLM phase reads: the source's texts, and with pretrain.mlm_text source+target
    the target's train texts too, without labels (its val and test texts never: they judge the
    fine-tuned model). Validation loss stays on the source's val split."""
    splits = text_only(splits)
    if p.pretrain.mlm_text == "source":
        return splits
    target, _ = load_tokenized(paths, "target")
    target_train = text_only(target)["train"].select_columns(splits["train"].column_names)
    train = concatenate_datasets([splits["train"], target_train.cast(splits["train"].features)])
    return DatasetDict(train=train, val=splits["val"])


def mlm_job(p: Params, paths: Paths, splits: DatasetDict, tokenizer, max_steps: int) -> TrainJob:
    splits = mlm_text(p, paths, splits)
    return pretrain_job(
        p, paths, splits, tokenizer, "pretrain-mlm",
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


def run_mlm(p: Params, paths: Paths, splits: DatasetDict, tokenizer, max_steps: int) -> tuple[PreTrainedModel, dict]:
    """The adapted masked-LM and its log: where its head came from, the final val loss and the
    val loss curve (the Trainer's history)."""
    job = mlm_job(p, paths, splits, tokenizer, max_steps)
    model, head = new_mlm_model(p, tokenizer)
    trainer = train(model, job)
    log = {"mlm_head": head, "text": p.pretrain.mlm_text, "train_rows": len(job.train), "val": trainer.evaluate(),
           "history": history(trainer)}
    finish(job)
    return trainer.model, log


def require_labels(splits: DatasetDict, mode: str) -> None:
    if "labels" not in splits["train"].column_names:
        raise HandoffError(
            f"data/tokenized/source has no labels (ingested for pretrain.mode mlm, text only); pretrain.mode {mode} "
            "trains on the source labels: run the ingest and tokenize stages first"
        )


def run(p: Params, paths: Paths) -> dict:
    # The fresh parts (the head; a scratch encoder; an MLM head the init lacks) start from the
    # seed, not from whatever the process drew before: the same params give the same model in
    # one process as in another, and a resumed run ends where an uninterrupted one does.
    transformers.set_seed(p.seed)
    splits, tokenizer = load_tokenized(paths, "source")
    mode = p.pretrain.mode
    log: dict = {"mode": mode, "init": p.model.init, "source_train_rows": len(splits["train"])}
    if mode == "mlm":
        model, mlm_log = run_mlm(p, paths, splits, tokenizer, p.pretrain.max_steps)
        log.update(mlm_log)
        save_model(model, tokenizer, paths.source_model, {"pretrain.json": log})
        return log
    require_labels(splits, mode)
    labels = domain_labels(p, "source")  # the source task's classes: the classifier's head
    log["labels"] = labels
    if mode == "mlm+supervised":
        adapted, log["mlm"] = run_mlm(p, paths, splits, tokenizer, p.pretrain.mlm_max_steps)
        with tempfile.TemporaryDirectory() as tmp:
            adapted.save_pretrained(tmp)
            model = load_classifier(tmp, labels, pooling=p.model.pooling)
    else:
        model = new_classifier(p.model.init, labels, p.model.scratch, tokenizer, pooling=p.model.pooling)
    job = supervised_job(p, paths, splits, tokenizer)
    trainer = train(model, job)
    log["val"] = trainer.evaluate()
    log["history"] = history(trainer)
    save_model(trainer.model, tokenizer, paths.source_model, {"pretrain.json": log})
    finish(job)
    return log
