"""Tokenize the prepared language pairs for an encoder-decoder model.

One shared subword vocabulary is trained over both sides of the source-pair and target-pair
train splits (scratch init), so the fine-tuned model keeps every embedding it learned in
pretraining; a pretrained init keeps its own tokenizer and gets the missing language tags.
Rows follow the contract in `tasks/translation/__init__.py`: encoder input
`<2tgt> source </s>`, labels `target </s>`, no padding (batches are padded when built).
"""

from __future__ import annotations

from datasets import Dataset, DatasetDict
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from tasks.common.errors import HandoffError, PipelineError
from tasks.common.io import atomic_dir, write_json_atomic
from tasks.common.models import SCRATCH, load_init_tokenizer
from tasks.common.paths import DOMAINS, SPLITS, Paths
from tasks.common.prepared import load_prepared
from tasks.common.text import lengths_summary
from tasks.params import Params
from tasks.translation import EOS, PAD, UNK, language_tag
from tasks.translation.model import encode_sources, encode_targets, subword_ids, tag_id

PREPARED_FIELDS = ("id", "src", "tgt", "src_lang", "tgt_lang")


# ---------------------------------------------------------------- tokenizer


def run_languages(p: Params) -> list[str]:
    """Every target language of the run, source pair first: the order of the tag ids."""
    languages = [p.data.source.languages.tgt, p.data.target.languages.tgt]
    return list(dict.fromkeys(languages))


def train_subword(texts: list[str], p: Params) -> PreTrainedTokenizerFast:
    """A shared BPE or Unigram vocabulary over all languages, with the contract's specials.

    BPE is byte-level: every byte is in the vocabulary, so a character never seen in training
    (a rare accent, an emoji in a test sentence) still round-trips instead of becoming <unk>.
    Unigram uses Metaspace ("▁man"); an unseen character there is <unk>. Both keep the spaces
    inside the tokens, so decoding gives back the exact spacing ("A man ." stays "A man ."),
    unlike a BERT-style pre-tokenizer that loses where the spaces were.
    """
    specials = [PAD, EOS, UNK] + [language_tag(lang) for lang in run_languages(p)]
    vocab_size = p.model.scratch.vocab_size
    if p.tokenize.subword == "unigram":
        core = Tokenizer(models.Unigram())
        core.pre_tokenizer = pre_tokenizers.Metaspace()
        core.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=UNK)
    else:
        core = Tokenizer(models.BPE(unk_token=UNK))
        # no prefix space: decoding then gives the text back without a leading blank
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet)
    core.normalizer = normalizers.NFKC()
    core.train_from_iterator(texts, trainer)
    for index, token in enumerate(specials):  # the contract fixes these ids
        if core.token_to_id(token) != index:
            raise PipelineError(f"tokenizer: special token {token} got id {core.token_to_id(token)}, expected {index}")
    core.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, specials.index(EOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=p.tokenize.max_length,
        clean_up_tokenization_spaces=False,  # the decoders already give the exact text back
    )


def pretrained_tokenizer(p: Params) -> PreTrainedTokenizerBase:
    """The init model's tokenizer plus any language tag it lacks (as special tokens: never split)."""
    tokenizer = load_init_tokenizer(p.model.init)
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise PipelineError(f"model.init: the tokenizer of '{p.model.init}' has no eos or pad token")
    vocab = tokenizer.get_vocab()
    missing = [language_tag(lang) for lang in run_languages(p) if language_tag(lang) not in vocab]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    tokenizer.model_max_length = min(tokenizer.model_max_length, p.tokenize.max_length)
    return tokenizer


def build_tokenizer(p: Params, prepared: dict) -> PreTrainedTokenizerBase:
    if p.model.init != SCRATCH:
        return pretrained_tokenizer(p)
    texts = [row[side] for domain in DOMAINS for row in prepared[domain]["train"] for side in ("src", "tgt")]
    return train_subword(texts, p)


# ---------------------------------------------------------------- encoding


def check_rows(rows: list[dict], domain: str, split: str, paths: Paths, pair) -> None:
    """Prepared rows must follow the contract and carry this run's languages (stale data after
    a change of `data.*.languages` would otherwise train the wrong direction silently)."""
    file = paths.split_file(domain, split)
    for number, row in enumerate(rows, start=1):
        missing = [field for field in PREPARED_FIELDS if field not in row]
        if missing:
            raise HandoffError(f"{file} row {number}: missing field(s) {missing}: re-run ingest")
        for side in ("src", "tgt"):
            wanted = getattr(pair, side)
            if row[f"{side}_lang"] != wanted:
                raise HandoffError(
                    f"{file} row {number}: {side}_lang {row[f'{side}_lang']!r} but data.{domain}.languages.{side} "
                    f"is {wanted!r}: re-run ingest"
                )


def encode_split(rows: list[dict], tokenizer: PreTrainedTokenizerBase, tgt_lang: str, p: Params) -> Dataset:
    table = Dataset.from_dict(
        {"id": [str(r["id"]) for r in rows], "src": [r["src"] for r in rows], "tgt": [r["tgt"] for r in rows]}
    )
    max_length = p.tokenize.max_length

    def encode(batch: dict) -> dict:
        sources, targets = subword_ids(tokenizer, batch["src"]), subword_ids(tokenizer, batch["tgt"])
        input_ids = encode_sources(tokenizer, batch["src"], tgt_lang, max_length)
        return {
            "input_ids": input_ids,
            "attention_mask": [[1] * len(ids) for ids in input_ids],
            "labels": encode_targets(tokenizer, batch["tgt"], max_length),
            "length": [len(ids) for ids in input_ids],  # drives length-grouped batches
            # lengths before truncation (with the specials), for the report only
            "src_full": [len(ids) + 2 for ids in sources],
            "tgt_full": [len(ids) + 1 for ids in targets],
        }

    return table.map(encode, batched=True, batch_size=p.tokenize.batch_size, remove_columns=["src", "tgt"], desc="tokenize")


def split_stats(dataset: Dataset, max_length: int) -> dict:
    return {side: lengths_summary(dataset[f"{side}_full"], max_length) for side in ("src", "tgt")}


# ---------------------------------------------------------------- stage


def run(p: Params, paths: Paths) -> dict:
    prepared = load_prepared(paths)
    pairs = {"source": p.data.source.languages, "target": p.data.target.languages}
    for domain in DOMAINS:
        for split in SPLITS:
            check_rows(prepared[domain][split], domain, split, paths, pairs[domain])
    tokenizer = build_tokenizer(p, prepared)
    report: dict = {
        "tokenizer": p.model.init if p.model.init != SCRATCH else f"scratch {p.tokenize.subword}",
        "vocab_size": len(tokenizer),
        "max_length": p.tokenize.max_length,
        "language_tags": {lang: tag_id(tokenizer, lang) for lang in run_languages(p)},
    }
    with atomic_dir(paths.tokenized) as tmp:
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        for domain in DOMAINS:
            tgt_lang = pairs[domain].tgt
            splits = DatasetDict({s: encode_split(prepared[domain][s], tokenizer, tgt_lang, p) for s in SPLITS})
            report[domain] = {s: split_stats(splits[s], p.tokenize.max_length) for s in SPLITS}
            splits.remove_columns(["src_full", "tgt_full"]).save_to_disk(str(tmp / domain))
    write_json_atomic(paths.tokenize_report, report)
    return report
