"""A stand-in for the validated `Params` that records which params a stage reads.

`ParamsRecorder(params, reads)` behaves like `params` for the stage code (attribute reads,
`getattr` with a default, `model_copy`, `model_dump`, `str`, ...) and adds to `reads` (a `Reads`)
the dotted path of every param it hands out: a plain value read (`p.finetune.learning_rate`)
records that path; a sub-model is handed out as another recorder, so only what is then read of
it counts; anything that can see every field of a (sub-)model at once (`model_dump`,
`model_dump_json`, `str`/`repr`/`format` as in `json.dumps(default=str)`, iteration, `==`,
`hash`, `copy`, a property or method of the model) records the whole subtree
(`"evaluate.target_only"`; `""` for all of the params). `model_copy(update=...)` hands out a
recorder of the copy under the same path: reads of the fields it replaced are not params reads.
Pickling records nothing (see `__reduce_ex__`).

Reads made inside `tasks.common.training.fingerprint_of` go to `Reads.fingerprint`, not to
`Reads.params`: that fingerprint (the training runs put the whole model and data sections in
it) only decides whether an interrupted run's checkpoint may be resumed, and a resumed run
writes what an uninterrupted one would, so no output depends on what it reads.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from pydantic import BaseModel

_SLOTS = ("_model", "_path", "_reads", "_replaced")
# (module, function) whose reads are not stage reads: see the module docstring
FINGERPRINT = ("tasks.common.training", "fingerprint_of")


def joined(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def in_fingerprint() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if (frame.f_globals.get("__name__"), frame.f_code.co_name) == FINGERPRINT:
            return True
        frame = frame.f_back
    return False


class Reads:
    """The dotted params read: `params` by the stage, `fingerprint` by the resume fingerprint."""

    def __init__(self) -> None:
        self.params: set[str] = set()
        self.fingerprint: set[str] = set()

    def add(self, path: str) -> None:
        (self.fingerprint if in_fingerprint() else self.params).add(path)


class ParamsRecorder:
    __slots__ = _SLOTS

    def __init__(self, model: BaseModel, reads: Reads, path: str = "", replaced: frozenset = frozenset()):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_reads", reads)
        object.__setattr__(self, "_replaced", replaced)

    def _whole(self) -> BaseModel:
        self._reads.add(self._path)
        return self._model

    def __getattr__(self, name: str) -> Any:
        model = self._model
        if name in type(model).model_fields:
            value = getattr(model, name)
            if name in self._replaced:  # set by model_copy(update=...), not read from the params
                return value
            path = joined(self._path, name)
            if isinstance(value, BaseModel):
                return ParamsRecorder(value, self._reads, path)
            self._reads.add(path)
            return value
        if name == "model_copy":
            def model_copy(update: dict | None = None, deep: bool = False) -> ParamsRecorder:
                return ParamsRecorder(model.model_copy(update=update, deep=deep), self._reads, self._path,
                                      self._replaced | frozenset(update or ()))
            return model_copy
        value = getattr(model, name)  # AttributeError as the model raises it (getattr defaults work)
        self._whole()
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._model, name, value)  # frozen models raise as they would

    def __str__(self) -> str:
        return str(self._whole())

    def __repr__(self) -> str:
        return repr(self._whole())

    def __format__(self, spec: str) -> str:
        return format(self._whole(), spec)

    def __iter__(self):
        return iter(self._whole())

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, ParamsRecorder):
            other = other._whole()
        return self._whole() == other

    def __hash__(self) -> int:
        return hash(self._whole())

    def __copy__(self) -> BaseModel:
        return copy.copy(self._whole())

    def __deepcopy__(self, memo: dict) -> BaseModel:
        return copy.deepcopy(self._whole(), memo)

    def __reduce_ex__(self, protocol: int):
        # Pickled, the model itself travels, and no read is recorded: datasets pickles a map
        # function's closure only to hash it for its cache, and the function's reads, made when
        # it runs in this process, are recorded then. (A worker process would read unrecorded:
        # no stage maps with num_proc.)
        return copy.deepcopy, (self._model,)


def covered(read: str, entries: list[str]) -> bool:
    """A read is covered by an entry naming it or a section holding it (`evaluate` covers
    `evaluate.generation.num_beams`); a whole-subtree read needs an entry at or above it."""
    return any(read == entry or read.startswith(entry + ".") for entry in entries)


def touches(read: str, entry: str) -> bool:
    """Whether `read` reads (part of) what `entry` lists; "" is a read of all the params."""
    return read == entry or read.startswith(entry + ".") or entry.startswith(read + ".") or read == ""
