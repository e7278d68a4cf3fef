"""Classification (`task.kind: classification`): text -> one of `task.labels`.

One module per stage (ingest, tokenize, pretrain, finetune, evaluate, export), each with one
`run(params, paths)`; shared pieces live in model.py (the classifier, its tokenized data, the
handoff checks), train.py (fine-tuning strategies, the budgeted run) and metrics.py. Contract
between the stages and the exported package:

- Prepared rows, `data/prepared/{source,target}/{train,val,test}.jsonl`: `{"id", "text", "label"}`
  with `label` one of `task.labels`.
- Tokenized data, `data/tokenized/{source,target}`: train/val/test with `id`, `input_ids`,
  `attention_mask` (+ `token_type_ids`), `labels` (the label's index), `length`; unpadded.
- Models, `models/{source,target}`: a sequence classifier whose id2label is `task.labels`, with
  its tokenizer (safetensors).
"""
