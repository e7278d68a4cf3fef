"""Translation tokenize, pretrain and finetune on Multi30k subsets (en->de source, en->fr target)
with a 2-layer d_model-32 scratch Marian."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from datasets import load_from_disk
from transformers import DataCollatorForSeq2Seq

from tasks.translation import finetune
from tasks.common.errors import HandoffError, PipelineError
from tasks.common.io import read_json, read_jsonl
from tasks.common.paths import Paths
from tasks.translation import EOS, PAD, UNK, language_tag
from tasks.translation.model import (
    check_translation_handoff,
    generate_ids,
    load_translator,
    new_translator,
    strip_generated,
    translate,
)
from tasks.translation.model import encode_source
from tasks.translation.tokenize import train_subword
from tasks.translation.train import load_pairs
from tests.translation.conftest import MULTI30K

REPO = Path(__file__).resolve().parents[2]


def copy_workspace(source, tmp_path) -> Paths:
    shutil.copytree(source, tmp_path, dirs_exist_ok=True)
    return Paths(tmp_path)


def state(model) -> dict:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def val_loss(model, splits, tokenizer) -> float:
    """Mean token loss over the whole val split in one batch (no dropout)."""
    model.eval()
    rows = splits["val"].remove_columns("length")
    batch = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)([rows[i] for i in range(len(rows))])
    with torch.no_grad():
        return model(**batch).loss.item()


# ---------------------------------------------------------------- tokenize


def test_tokenizer_has_the_contract_ids_and_round_trips_sentences(translation_tokenized):
    paths = Paths(translation_tokenized)
    _, tokenizer = load_pairs(paths, "target")
    expected = [PAD, EOS, UNK, language_tag("de"), language_tag("fr")]
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == expected
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert len(tokenizer) <= 1000
    assert tokenizer("A man .")["input_ids"][-1] == tokenizer.eos_token_id, "the post-processor appends </s>"
    # byte-level BPE: characters never seen in training (the emoji) still round-trip
    sentences = ["A man .", "Two dogs , one brown , play .", "Un cœur 🙂 !"]
    sentences += [row["tgt"] for row in read_jsonl(paths.split_file("target", "train"))[:50]]
    for text in sentences:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_unigram_vocabulary_keeps_the_contract_too(translation_params):
    p = translation_params(**{"tokenize.subword": "unigram", "model.scratch.vocab_size": 500})
    with gzip.open(MULTI30K / "train.fr.gz", "rt", encoding="utf-8") as handle:
        texts = [line.strip() for line, _ in zip(handle, range(300))]
    tokenizer = train_subword(texts, p)
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == [PAD, EOS, UNK, "<2de>", "<2fr>"]
    assert tokenizer.decode(tokenizer(texts[3])["input_ids"], skip_special_tokens=True) == texts[3]


def test_tokenized_rows_follow_the_contract_and_match_encode_source(translation_tokenized):
    paths = Paths(translation_tokenized)
    splits = load_from_disk(str(paths.tokenized_domain("target")))
    _, tokenizer = load_pairs(paths, "target")
    val = splits["val"]
    assert set(val.column_names) == {"id", "input_ids", "attention_mask", "labels", "length"}
    prepared = read_jsonl(paths.split_file("target", "val"))
    assert val["id"] == [row["id"] for row in prepared]
    fr = tokenizer.convert_tokens_to_ids("<2fr>")
    for row, ids, labels in zip(prepared[:100], val["input_ids"], val["labels"]):
        assert ids == encode_source(tokenizer, row["src"], "fr", 64)
        assert ids[0] == fr and ids[-1] == tokenizer.eos_token_id and labels[-1] == tokenizer.eos_token_id
        if len(labels) < 64:  # not truncated
            assert tokenizer.decode(labels, skip_special_tokens=True) == row["tgt"]
    assert val["length"] == [len(ids) for ids in val["input_ids"]]
    assert len({len(ids) for ids in val["input_ids"]}) > 5, "rows are not padded (dynamic padding)"
    source_train = load_from_disk(str(paths.tokenized_domain("source")))["train"]
    assert {ids[0] for ids in source_train["input_ids"]} == {tokenizer.convert_tokens_to_ids("<2de>")}
    report = read_json(paths.tokenize_report)
    assert report["language_tags"] == {"de": 3, "fr": 4}
    stats = report["target"]["val"]
    assert stats["src"]["rows"] == len(val) and stats["src"]["max"] >= stats["src"]["p95"] >= stats["src"]["p50"] > 2


def test_prepared_rows_of_another_language_pair_are_one_clear_error(translation_tokenized, translation_params, tmp_path):
    from tasks.translation import tokenize

    paths = Paths(tmp_path)
    shutil.copytree(translation_tokenized / "data" / "prepared", paths.prepared)
    with pytest.raises(HandoffError) as caught:
        tokenize.run(translation_params(**{"data.target.languages.tgt": "cs"}), paths)
    assert str(caught.value) == (
        f"{paths.split_file('target', 'train')} row 1: tgt_lang 'fr' but data.target.languages.tgt is 'cs': re-run ingest"
    )


def test_truncation_keeps_the_tag_and_the_end_token(translation_tokenized):
    _, tokenizer = load_pairs(Paths(translation_tokenized), "source")
    long_text = "A man in a blue shirt is standing on a ladder cleaning windows . " * 5
    ids = encode_source(tokenizer, long_text, "de", 8)
    assert len(ids) == 8 and ids[0] == tokenizer.convert_tokens_to_ids("<2de>") and ids[-1] == tokenizer.eos_token_id


# ---------------------------------------------------------------- pretrain


def test_pretrain_writes_a_loadable_model_that_learned(translation_pretrained, translation_params):
    paths = Paths(translation_pretrained)
    splits, tokenizer = load_pairs(paths, "source")
    trained = load_translator(paths.source_model)
    assert trained.config.encoder_layers == 2 and trained.config.d_model == 32
    assert trained.config.decoder_start_token_id == tokenizer.pad_token_id == 0
    untrained = new_translator(translation_params(), tokenizer)
    after, before = val_loss(trained, splits, tokenizer), val_loss(untrained, splits, tokenizer)
    assert after < before - 0.5, f"val loss {after:.3f} not below the untrained model's {before:.3f}"
    log = read_json(paths.source_model / "pretrain.json")
    # the Trainer averages per batch, val_loss over all tokens at once: close, not equal
    assert log["val"]["eval_loss"] == pytest.approx(after, rel=2e-2), "the saved model is the evaluated one"
    assert log["train_rows"] == 300 and log["languages"] == {"src": "en", "tgt": "de"}
    assert not (paths.root / "checkpoints" / "pretrain").exists(), "a finished run leaves no checkpoint"
    assert (paths.live_dir("pretrain") / "metrics.json").exists()


# ---------------------------------------------------------------- finetune


def test_full_finetune_writes_the_target_model(translation_finetuned):
    paths = Paths(translation_finetuned)
    log = read_json(paths.target_model / "finetune.json")
    assert log["strategy"] == "full" and log["train_rows"] == 300
    source, target = state(load_translator(paths.source_model)), state(load_translator(paths.target_model))
    assert not torch.equal(source["model.shared.weight"], target["model.shared.weight"])
    assert log["trainable_parameters"] == sum(
        q.numel() for n, q in load_translator(paths.target_model).named_parameters() if "embed_positions" not in n
    )


@pytest.mark.parametrize(
    "strategy, frozen, trained",
    [
        ("freeze_bottom", ["model.shared.", "model.encoder.layers.0."], ["model.encoder.layers.1.", "model.decoder.layers."]),
        ("freeze_encoder", ["model.encoder.layers."], ["model.shared.", "model.decoder.layers."]),
    ],
)
def test_frozen_tensors_stay_bitwise_unchanged(strategy, frozen, trained, translation_pretrained, translation_params, tmp_path):
    paths = copy_workspace(translation_pretrained, tmp_path)
    p = translation_params(**{"finetune.strategy": strategy, "finetune.freeze_layers": 1, "finetune.max_steps": 4,
                              "finetune.eval_steps": 4, "finetune.target_budget": 64})
    result = finetune.run(p, paths)
    before, after = state(load_translator(paths.source_model)), state(load_translator(paths.target_model))
    for prefix in frozen:
        names = [n for n in before if n.startswith(prefix)]
        assert names and all(torch.equal(before[n], after[n]) for n in names), f"{prefix} changed"
    for prefix in trained:
        names = [n for n in before if n.startswith(prefix) and n.endswith("weight")]
        assert names and any(not torch.equal(before[n], after[n]) for n in names), f"{prefix} did not train"
    assert result["train_rows"] == 64 and result["strategy"] == strategy


def test_freezing_more_layers_than_the_encoder_has_is_one_clear_error(translation_pretrained, translation_params, tmp_path):
    paths = copy_workspace(translation_pretrained, tmp_path)
    p = translation_params(**{"finetune.strategy": "freeze_bottom", "finetune.freeze_layers": 3})
    with pytest.raises(PipelineError, match="freeze_layers: 3 exceeds the model's 2 encoder layers"):
        finetune.run(p, paths)


def test_handoff_rejects_a_tokenizer_with_another_vocabulary(translation_pretrained, translation_params, tmp_path):
    paths = copy_workspace(translation_pretrained, tmp_path)
    other = train_subword(["Ein ganz anderer Text ."] * 50 + ["Un autre texte ."] * 50, translation_params(**{"model.scratch.vocab_size": 500}))
    shutil.rmtree(paths.tokenizer)
    other.save_pretrained(str(paths.tokenizer))
    with pytest.raises(HandoffError) as caught:
        finetune.run(translation_params(), paths)
    message = str(caught.value)
    assert "\n" not in message and str(paths.source_model) in message and "tokenizer differs" in message


def test_handoff_needs_the_language_tag_and_a_model(translation_pretrained, tmp_path):
    paths = Paths(translation_pretrained)
    _, tokenizer = load_pairs(paths, "target")
    with pytest.raises(HandoffError, match="no language tag <2cs>"):
        check_translation_handoff(paths.source_model, tokenizer, "cs")
    with pytest.raises(HandoffError, match="config.json missing"):
        check_translation_handoff(tmp_path, tokenizer, "fr")
    with pytest.raises(HandoffError, match="config.json missing"):
        load_translator(tmp_path)


# ---------------------------------------------------------------- generation


def test_generate_ids_matches_model_generate_greedy(translation_finetuned):
    paths = Paths(translation_finetuned)
    _, tokenizer = load_pairs(paths, "target")
    model = load_translator(paths.target_model).eval()
    texts = [row["src"] for row in read_jsonl(paths.split_file("target", "test"))[:6]]
    texts.append("A dog .")  # a short one sorts first: the original order must come back
    ours = generate_ids(model, tokenizer, texts, "fr", num_beams=1, max_new_tokens=12, batch_size=3, device="cpu")
    for text, ids in zip(texts, ours):
        source = torch.tensor([encode_source(tokenizer, text, "fr", 64)])
        reference = model.generate(input_ids=source, num_beams=1, do_sample=False, max_new_tokens=12)[0].tolist()
        assert ids == strip_generated(reference, 0, tokenizer.eos_token_id, tokenizer.pad_token_id)
        assert tokenizer.eos_token_id not in ids and tokenizer.pad_token_id not in ids
    decoded = translate(model, tokenizer, texts, "fr", num_beams=2, max_new_tokens=12, batch_size=4, device="cpu")
    assert len(decoded) == len(texts) and all(isinstance(t, str) and "<2fr>" not in t for t in decoded)


def test_strip_generated_drops_start_and_cuts_at_end():
    assert strip_generated([0, 7, 8, 1, 9, 0], decoder_start=0, eos=1, pad=0) == [7, 8]
    assert strip_generated([0, 7, 8], decoder_start=0, eos=1, pad=0) == [7, 8]


# ---------------------------------------------------------------- python -m through the dispatch


def run_module(stage: str, workspace, params_file) -> subprocess.CompletedProcess:
    env = dict(os.environ, PIPELINE_PARAMS=str(params_file), PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "tasks", stage], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=300)


def test_python_m_finetune_dispatches_to_translation(translation_pretrained, translation_params, tmp_path):
    """The fixtures call tasks.tokenize/pretrain/finetune.run (the dispatch); this checks `main` too."""
    paths = copy_workspace(translation_pretrained, tmp_path)
    p = translation_params(**{"finetune.max_steps": 2, "finetune.eval_steps": 2})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(p.model_dump(mode="json")))
    done = run_module("finetune", tmp_path, params_file)
    assert done.returncode == 0, done.stderr[-2000:]
    log = read_json(paths.target_model / "finetune.json")
    assert log["strategy"] == "full" and log["history"][-1]["step"] == 2


def test_a_pretrained_init_gets_the_missing_tag_and_grown_embeddings(translation_pretrained, translation_params, tmp_path):
    """en->cs by one param, from a saved model (any seq2seq path or HF id works the same)."""
    from tasks.translation import ingest, tokenize

    init = Paths(translation_pretrained).source_model
    p = translation_params(**{"model.init": str(init), "data.target.languages.tgt": "cs", "data.target.max_rows": 50})
    paths = Paths(tmp_path)
    ingest.run(p, paths)
    report = tokenize.run(p, paths)
    _, tokenizer = load_pairs(paths, "target")
    _, original = load_pairs(Paths(translation_pretrained), "target")
    cs = tokenizer.convert_tokens_to_ids("<2cs>")
    assert len(tokenizer) == len(original) + 1 and cs == len(original), "the one missing tag is appended"
    assert report["language_tags"] == {"de": 3, "cs": cs}
    assert tokenizer.decode([cs, 7], skip_special_tokens=True) == tokenizer.decode([7])
    model = new_translator(p, tokenizer)
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert not model.model.encoder.embed_positions.weight.requires_grad
    ids = generate_ids(model, tokenizer, ["A man ."], "cs", num_beams=1, max_new_tokens=4, batch_size=1, device="cpu")
    assert len(ids) == 1 and len(ids[0]) <= 4


def test_a_killed_finetune_resumes_from_its_checkpoint(translation_pretrained, translation_params, tmp_path, monkeypatch):
    from transformers import Trainer

    paths = copy_workspace(translation_pretrained, tmp_path)
    # 64 pairs at batch 16 are 4 steps an epoch: 2 epochs, capped at 6 steps
    p = translation_params(**{"finetune.max_steps": 6, "finetune.epochs": 2.0, "finetune.eval_steps": 3,
                              "finetune.early_stopping_patience": 0, "finetune.target_budget": 64,
                              "finetune.strategy": "freeze_encoder"})
    original = Trainer.training_step
    calls = []

    def dying_step(self, *args, **kwargs):
        calls.append(self.state.global_step)
        if len(calls) == 5:  # past checkpoint-3: the process "dies" here
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        finetune.run(p, paths)
    assert (paths.checkpoints("finetune") / "checkpoint-3").exists() and not paths.target_model.exists()
    counted = []
    monkeypatch.setattr(Trainer, "training_step", lambda self, *a, **k: counted.append(1) or original(self, *a, **k))
    finetune.run(p, paths)
    assert len(counted) == 3, "the re-run must resume at step 3, not start over"
    before, after = state(load_translator(paths.source_model)), state(load_translator(paths.target_model))
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("model.encoder.layers."))
