"""Translation (`task.kind: translation`): the work of the six stages for encoder-decoder models.

One module per stage (ingest, tokenize, pretrain, finetune, evaluate, export), each with one
`run(p, paths)`, run by `python -m tasks <stage>` when `task.kind` is translation; shared
pieces live in model.py (the model, its encoding contract, generation), train.py (training
and fine-tuning strategies), metrics.py, decoder_step.py and gate.py (the export gate).
The conventions below are the contract between the stages, the exported
package and the torch-free runtime:

- Prepared rows, `data/prepared/{source,target}/{train,val,test}.jsonl`, one per pair:
  `{"id": str, "src": str, "tgt": str, "src_lang": "en", "tgt_lang": "de"}`.
  The source domain is the source language pair (e.g. en->de), the target domain the target
  pair (e.g. en->fr). Quarantined pairs go to `data/prepared/quarantine.jsonl` as for
  classification; `reports/data.json` holds every count.
- Tokenizer, `data/tokenized/tokenizer` (a `PreTrainedTokenizerFast`): one shared subword
  vocabulary trained once over every language of the run (both pairs, both sides), so the
  fine-tuned model keeps its embeddings. Special tokens: `<pad>` = 0, `</s>` = 1, `<unk>` = 2,
  then one tag per target language, `<2de>`, `<2fr>`, ... (`language_tag(lang)`).
  Encoder input: `<2{tgt_lang}> source words </s>`; labels: `target words </s>`.
  One decoder thus serves both pairs; the tag picks the output language.
- Tokenized data, `data/tokenized/{source,target}`: a DatasetDict train/val/test with columns
  `id`, `input_ids`, `attention_mask`, `labels`, `length`.
- Model: `transformers.MarianMTModel` built from `model.scratch` (or any
  `AutoModelForSeq2SeqLM` init), `decoder_start_token_id` = pad id, `eos_token_id` = `</s>`,
  saved with its tokenizer in `models/source`, `models/target` (safetensors).
"""

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def language_tag(lang: str) -> str:
    """The token that tells the shared decoder which language to write."""
    return f"<2{lang}>"
