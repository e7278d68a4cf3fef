"""Run exported model packages with onnxruntime, tokenizers and numpy: no torch, no
transformers, nothing from `tasks`. `serving.classifier.OnnxClassifier`,
`serving.translator.OnnxTranslator`, `python -m serving PACKAGE` (stdin -> JSON lines)."""
