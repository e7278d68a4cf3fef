"""python -m tasks challenge for translation: the run's package against a champion package on
the decision set, BLEU with sacrebleu's sentence statistics (the tiny exported workspace of
tests/serving/test_translator.py)."""

from __future__ import annotations

import shutil

import pytest

from serving.translator import OnnxTranslator
from tasks.common.errors import HandoffError
from tasks.common.prepared import prepared_split
from tasks.translation import challenge
from tasks.translation.metrics import translation_scores
from tests.serving.test_translator import export_params, exported_workspace


@pytest.fixture
def workspace(tmp_path_factory, tmp_path):
    paths = exported_workspace(tmp_path_factory)[0]
    shutil.copytree(paths.root, tmp_path / "ws")
    return type(paths)(tmp_path / "ws")


def test_a_package_against_itself_keeps_the_champion_and_a_worse_one_loses(workspace, tmp_path, monkeypatch):
    champion = shutil.copytree(workspace.onnx, tmp_path / "champion")
    report = challenge.run(export_params(), workspace, champion)
    rows = prepared_split(workspace, "target", "test")
    served = OnnxTranslator(champion).translate([row["src"] for row in rows])  # the manifest's own decoding
    bleu = translation_scores(served, [row["tgt"] for row in rows], "fr")["bleu"]
    assert report["scores"] == {"challenger": pytest.approx(bleu, abs=1e-3), "champion": pytest.approx(bleu, abs=1e-3)}
    assert report["decision"]["promote"] is False and report["decision"]["metric"] == "BLEU"
    assert report["decoding"]["champion"]["num_beams"] == 3

    translate = OnnxTranslator.translate  # a champion that answers with the source text scores far less
    monkeypatch.setattr(OnnxTranslator, "translate", lambda self, texts, **kw: (
        list(texts) if self.package == champion else translate(self, texts, **kw)))
    worse = challenge.run(export_params(), workspace, champion)
    assert worse["scores"]["champion"] < worse["scores"]["challenger"]
    assert worse["decision"]["gain"] == pytest.approx(worse["scores"]["challenger"] - worse["scores"]["champion"], abs=1e-3)


def test_a_champion_for_another_language_pair_is_refused(workspace, tmp_path, monkeypatch):
    champion = shutil.copytree(workspace.onnx, tmp_path / "champion")
    load = OnnxTranslator.__init__

    def german(self, package, *args, **kwargs):
        load(self, package, *args, **kwargs)
        if self.package == champion:
            self.manifest = {**self.manifest, "languages": {"src": "en", "tgt": "de"}}

    monkeypatch.setattr(OnnxTranslator, "__init__", german)
    with pytest.raises(HandoffError, match=r"^champion package .* translates \{'src': 'en', 'tgt': 'de'\}, not"):
        challenge.run(export_params(), workspace, champion)
