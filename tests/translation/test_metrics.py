"""translation_scores against sacrebleu's own API and against hand-checkable cases."""

from __future__ import annotations

import pytest
import sacrebleu

from tasks.common.errors import DataError
from tasks.translation.metrics import bleu_tokenizer, exact_match, translation_scores

HYPS = ["Ein Mann fährt Fahrrad auf der Straße .", "Zwei Hunde spielen im Schnee .", "Eine Frau liest ein Buch"]
REFS = ["Ein Mann fährt auf der Straße Fahrrad .", "Zwei Hunde spielen im Schnee .", "Eine Frau liest eine Zeitung ."]


def test_scores_equal_sacrebleu_corpus_scores():
    scores = translation_scores(HYPS, REFS, "de")
    bleu = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="13a")
    chrf = sacrebleu.corpus_chrf(HYPS, [REFS])
    assert scores["bleu"] == pytest.approx(bleu.score)
    assert scores["brevity_penalty"] == pytest.approx(bleu.bp)
    assert scores["precisions"] == pytest.approx(bleu.precisions)
    assert scores["chrf"] == pytest.approx(chrf.score)
    assert scores["count"] == 3
    assert 0 < scores["bleu"] < 100  # neither trivial case: the comparison above means something


def test_signatures_name_references_and_tokenizer():
    scores = translation_scores(HYPS, REFS, "fr")
    assert "nrefs:1" in scores["bleu_signature"] and "tok:13a" in scores["bleu_signature"]
    assert f"version:{sacrebleu.__version__}" in scores["bleu_signature"]
    assert "nc:6" in scores["chrf_signature"]  # chrF's character n-gram order


def test_identical_hypotheses_score_100_and_match_exactly():
    scores = translation_scores(REFS, REFS, "de")
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["chrf"] == pytest.approx(100.0)
    assert scores["exact_match"] == 1.0
    assert scores["brevity_penalty"] == pytest.approx(1.0)


def test_disjoint_hypotheses_score_0():
    scores = translation_scores(["aaa bbb ccc ddd"], ["www xxx yyy zzz"], "de")
    assert scores["bleu"] == 0.0
    assert scores["exact_match"] == 0.0
    assert scores["precisions"] == [0.0, 0.0, 0.0, 0.0]


def test_exact_match_is_the_fraction_of_equal_rows_ignoring_whitespace():
    hyps = ["a  b c ", "x y", "same", "other"]
    refs = ["a b c", "x z", "same", "another"]
    assert exact_match(hyps, refs) == pytest.approx(2 / 4)
    assert translation_scores(hyps, refs, "cs")["exact_match"] == pytest.approx(0.5)


def test_short_hypotheses_get_a_brevity_penalty():
    scores = translation_scores(["Zwei Hunde spielen"], ["Zwei Hunde spielen im Schnee ."], "de")
    assert scores["brevity_penalty"] < 1.0
    assert scores["hyp_len"] == 3 and scores["ref_len"] == 6


def test_tokenizer_by_language():
    assert bleu_tokenizer("zh") == "zh"
    assert bleu_tokenizer("zh-TW") == "zh"
    assert bleu_tokenizer("de") == "13a"
    assert bleu_tokenizer("cs") == "13a"
    assert bleu_tokenizer("ja") in ("ja-mecab", "13a")  # MeCab is optional
    assert "tok:zh" in translation_scores(["我 爱 你"], ["我爱你"], "zh")["bleu_signature"]


@pytest.mark.parametrize(("hyps", "refs", "expected"), [
    ([], [], "no hypotheses"),
    (["a"], ["a", "b"], "1 hypotheses but 2 references"),
])
def test_bad_input_is_one_clear_line(hyps, refs, expected):
    with pytest.raises(DataError, match=expected) as err:
        translation_scores(hyps, refs, "de")
    assert "\n" not in str(err.value)
