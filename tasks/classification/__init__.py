"""Classification (`task.kind: classification`): text -> one of `task.labels`.

One module per stage (ingest, tokenize, pretrain, finetune, evaluate, export), each with one
`run(params, paths)`; shared pieces live in model.py (the classifier, its tokenized data, the
handoff checks), train.py (fine-tuning strategies, the budgeted run) and metrics.py. Contract
between the stages and the exported package:

- Prepared rows, `data/prepared/{source,target}/{train,val,test}.jsonl`: `{"id", "text", "label"}`
  with `label` one of the domain's classes (`tasks.params.domain_labels`: task.labels for the target,
  data.source.labels, else task.labels, for the source); `{"id", "text"}` for the source under
  pretrain.mode mlm, which reads its text only.
- Tokenized data, `data/tokenized/{source,target}`: train/val/test with `id`, `input_ids`,
  `attention_mask` (+ `token_type_ids`), `labels` (the label's index in the domain's classes;
  absent for an unlabelled source), `length`; unpadded.
- Models, `models/{source,target}`: `models/source` a sequence classifier over the source's
  classes (or a masked-LM, pretrain.mode mlm), `models/target` one whose id2label is
  `task.labels`, each with its tokenizer (safetensors).
"""
