"""Translation scores: sacrebleu corpus BLEU (with its signature, so a figure can be reproduced),
chrF and exact match, and BLEU's per-sentence statistics for paired bootstraps. Pure functions
on lists of strings; no model, no files."""

from __future__ import annotations

import importlib.util

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from tasks.common.errors import DataError
from tasks.common.significance import Scorer

# Languages written without spaces need their own BLEU tokenizer; sacrebleu's Japanese and
# Korean ones need MeCab, which is optional, so they fall back to the default when it is absent.
MECAB_TOKENIZERS = {"ja": "ja-mecab", "ko": "ko-mecab"}
DEFAULT_TOKENIZER = "13a"


def bleu_tokenizer(tgt_lang: str) -> str:
    """sacrebleu's tokenizer for the target language: 'zh' for Chinese, MeCab for ja/ko when
    installed, otherwise '13a' (sacrebleu's default, the WMT standard)."""
    base = tgt_lang.lower().split("-")[0].split("_")[0]
    if base == "zh":
        return "zh"
    if base in MECAB_TOKENIZERS and importlib.util.find_spec("MeCab") is not None:
        return MECAB_TOKENIZERS[base]
    return DEFAULT_TOKENIZER


def normalise_spaces(text: str) -> str:
    return " ".join(text.split())


def exact_match(hypotheses: list[str], references: list[str]) -> float:
    """Fraction of hypotheses equal to their reference, ignoring differences in whitespace."""
    same = sum(normalise_spaces(h) == normalise_spaces(r) for h, r in zip(hypotheses, references))
    return same / len(hypotheses)


def check_lists(hypotheses: list[str], references: list[str]) -> None:
    if not hypotheses:
        raise DataError("translation scores: no hypotheses to score (empty test set?)")
    if len(hypotheses) != len(references):
        raise DataError(f"translation scores: {len(hypotheses)} hypotheses but {len(references)} references")


def translation_scores(hypotheses: list[str], references: list[str], tgt_lang: str) -> dict:
    """Corpus BLEU (score 0-100, signature, brevity penalty, 1-4-gram precisions), chrF (score,
    signature), exact match (0-1) and the count, for one reference per hypothesis."""
    check_lists(hypotheses, references)
    bleu = BLEU(tokenize=bleu_tokenizer(tgt_lang))
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf = CHRF()
    chrf_score = chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": float(bleu_score.score),
        "bleu_signature": str(bleu.get_signature()),
        "brevity_penalty": float(bleu_score.bp),
        "precisions": [float(x) for x in bleu_score.precisions],
        "hyp_len": int(bleu_score.sys_len),
        "ref_len": int(bleu_score.ref_len),
        "chrf": float(chrf_score.score),
        "chrf_signature": str(chrf.get_signature()),
        "exact_match": exact_match(hypotheses, references),
        "count": len(hypotheses),
    }


class BleuStatistics:
    """sacrebleu's paired-bootstrap machinery for BLEU (what sacrebleu.significance does): the
    per-sentence sufficient statistics of a system (hypothesis and reference lengths, matching
    and total n-grams of each order), so the corpus BLEU of any resample of test rows is that of
    its summed statistics. The references are tokenized once, each distinct output scored once
    (a baseline no budget changes is the same output at every budget and seed)."""

    def __init__(self, references: list[str], tgt_lang: str):
        self.bleu = BLEU(tokenize=bleu_tokenizer(tgt_lang), references=[references])
        self.count = len(references)
        self.extracted: dict[tuple[str, ...], np.ndarray] = {}

    def statistics(self, hypotheses: list[str]) -> np.ndarray:
        """(rows, 2 + 2 * max n-gram order) integer statistics, one row per test sentence."""
        if len(hypotheses) != self.count:
            raise ValueError(f"BLEU statistics: {len(hypotheses)} hypotheses for {self.count} references")
        key = tuple(hypotheses)
        if key not in self.extracted:
            self.extracted[key] = np.asarray(self.bleu._extract_corpus_statistics(hypotheses, None), dtype=np.int64)
        return self.extracted[key]

    def scorer(self, hypotheses: list[str]) -> Scorer:
        """rows -> corpus BLEU of those rows (a resample may repeat a row): the statistics are
        summed as the product of each row's count in the resample by the statistics matrix."""
        stats = self.statistics(hypotheses)

        def score(rows: np.ndarray) -> float:
            summed = np.bincount(rows, minlength=self.count) @ stats
            return float(self.bleu._compute_score_from_stats(summed.tolist()).score)

        return score
