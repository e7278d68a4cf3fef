"""Tokenize the prepared splits: the init model's fast tokenizer, or a WordPiece tokenizer
trained on the source text when `model.init: scratch`. No padding here (batches are padded
when they are built); the output is Arrow (datasets.save_to_disk) plus the tokenizer."""

from __future__ import annotations

from datasets import Dataset, DatasetDict
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from tasks.common.errors import HandoffError
from tasks.common.io import atomic_dir, write_json_atomic
from tasks.common.models import SCRATCH, load_init_tokenizer
from tasks.common.paths import DOMAINS, SPLITS, Paths
from tasks.common.prepared import load_prepared
from tasks.common.text import lengths_summary
from tasks.params import Params, domain_labels

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: list[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """A BERT-style uncased WordPiece tokenizer learned from `texts` (the source domain)."""
    core = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.decoder = decoders.WordPiece()
    core.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS))
    cls, sep = core.token_to_id("[CLS]"), core.token_to_id("[SEP]")
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def build_tokenizer(p: Params, source_train: list[dict]) -> PreTrainedTokenizerBase:
    if p.model.init == SCRATCH:
        texts = [row["text"] for row in source_train]
        return train_wordpiece(texts, p.model.scratch.vocab_size, p.tokenize.max_length)
    tokenizer = load_init_tokenizer(p.model.init)
    tokenizer.model_max_length = min(tokenizer.model_max_length, p.tokenize.max_length)
    return tokenizer


def encode_split(rows: list[dict], tokenizer: PreTrainedTokenizerBase, p: Params, domain: str = "target") -> Dataset:
    """The rows tokenized, with `labels` the index of each row's label in its domain's classes
    (data.source.labels for the source, task.labels for the target); rows ingest wrote without a
    label (an unlabelled source, for pretrain.mode mlm) get no `labels` column."""
    columns = {"id": [str(row["id"]) for row in rows], "text": [row["text"] for row in rows]}
    if any("label" in row for row in rows):
        labels = domain_labels(p, domain)
        label_ids = {name: i for i, name in enumerate(labels)}
        unknown = {str(row.get("label")) for row in rows} - set(label_ids)
        if unknown:  # ingested under other params
            raise HandoffError(
                f"data/prepared/{domain}: labels {sorted(unknown)} are not the domain's classes {labels}: run the ingest stage first"
            )
        columns["labels"] = [label_ids[row["label"]] for row in rows]
    table = Dataset.from_dict(columns)

    def encode(batch: dict) -> dict:
        encoded = tokenizer(batch["text"], truncation=True, max_length=p.tokenize.max_length)
        # Lengths before truncation, for the report; `length` also drives length-grouped batches.
        # verbose=False: transformers would warn that these untruncated ids are too long for the
        # model, though only the truncated ones above ever reach it.
        full = tokenizer(batch["text"], truncation=False, verbose=False)["input_ids"]
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        encoded["untruncated_length"] = [len(ids) for ids in full]
        return encoded

    return table.map(encode, batched=True, batch_size=p.tokenize.batch_size, desc="tokenize")


def length_stats(dataset: Dataset, max_length: int) -> dict:
    return lengths_summary(dataset["untruncated_length"], max_length)


def run(p: Params, paths: Paths) -> dict:
    prepared = load_prepared(paths)
    tokenizer = build_tokenizer(p, prepared["source"]["train"])
    report: dict = {"tokenizer": p.model.init, "vocab_size": len(tokenizer), "max_length": p.tokenize.max_length}
    with atomic_dir(paths.tokenized) as tmp:
        tokenizer.save_pretrained(tmp / "tokenizer")
        for domain in DOMAINS:
            splits = DatasetDict({s: encode_split(prepared[domain][s], tokenizer, p, domain) for s in SPLITS})
            report[domain] = {s: length_stats(splits[s], p.tokenize.max_length) for s in SPLITS}
            splits.remove_columns("untruncated_length").save_to_disk(str(tmp / domain))
    write_json_atomic(paths.tokenize_report, report)
    return report
