"""Is a parallel file still line-aligned? Per-pair suspects and shifted stretches (issue 10, item 7).

Two line-aligned files with equal line counts can still be misaligned: a blank line inserted on
one side and a line deleted 150 lines later shift 150 pairs without changing the counts. Only
the lengths and the character make-up of the sentences are used (no model, no dictionary), so
this works for any language pair; O(n) after two medians (29,000 pairs in ~0.3 s of CPU).

Per file (pair of files, or tabular file) with at least MIN_PAIRS usable pairs:

- **Length**: r = log((len(tgt) + 1) / (len(src) + 1)) in characters. Center: the median of r.
  Scale: 1.4826 * the median over pairs of the best fit among target lines i-1, i, i+1,
  min_k |r(src[i], tgt[i+k]) - center| (see `length_model`): the plain MAD grows 3.5-fold when
  most of a file is shifted, and would hide the shift in its own noise; this one does not move.
  |z| > LENGTH_LIMIT makes the pair `suspect_alignment`.
- **Character profile**: the share of letters (str.isalpha) of each side; the difference
  tgt - src against its median and MAD. |z| > PROFILE_LIMIT makes it `suspect_alignment`
  (a side replaced by digits, markup or symbols of about the right length).
- **Shift**: per pair the cost c_k(i) = min(|z of (src[i], tgt[i+k])|, COST_CAP). Where the
  files are aligned c_0 is small and the neighbours' c_k large (two unrelated sentences); in a
  shifted stretch it is the other way round. A one-sided CUSUM of c_0 - c_k - ALLOWANCE per
  k in OFFSETS raises the alarm when it passes SHIFT_ALARM; the stretch starts where the running
  sum of c_0 - c_k (k: the offset whose sum rises most) was lowest before its rise.

Calibration on the real Multi30k (train 29,000 / val 1,014 / test_2016_flickr 1,000 lines; en,
de, fr, cs: all 18 file pairs; tests/translation/test_alignment.py keeps it): length scale
0.099-0.123. |z| > 10 flags only the two `@@` lines of train.de (|z| 26-28); the next largest
is 9.8, "Muž řeže strom." for "A logger cutting down a large tree trunk in barren woods.":
0.007 % of train pairs at most, none in val and test. Letter share: apart from `@@` no real
pair passes |z| 6.8 (limit 8). The CUSUM peaks at 8.1 on real data and at 8.5 with the file
sorted by source or target length (neighbours then fit almost as well); the alarm is at 14.
Simulated shifts in the real val/test files: found ~11 lines (median, at most ~45) into them,
the start placed within 2 lines in ~85 % of cases, within 8 always; stretches of 30 lines or
more are ~always found, of 20 lines ~93 %, of 10 lines mostly not (they cost <= 10 pairs).
Measured and left out: a differing multiset of digit sequences (0.3-0.6 % of real train pairs
write a number as a word on one side: "2 girls" / "Zwei Mädchen") and a '?' on one side only
(never differs in Multi30k, so no evidence either way).

Stopping: a shifted stretch, or more than MAX_SUSPECT_SHARE of the file's pairs suspect (and at
least MIN_SUSPECTS_TO_STOP), raises one-line DataError naming the params field, the file(s)
and the first line: the files need fixing, not a quarantine of half their pairs. A file with
fewer than MIN_PAIRS usable pairs is not judged: too few for a robust median and scale. Tabular and
hf inputs get the same checks per file: two columns of one row are shifted the same way when
they were pasted together from two lists, and rows are read in file order; errors then say
"row" (the reader's row number) instead of "line".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Optional

from tasks.common.errors import DataError
from tasks.common.sources import Bad, Record, clean_text

SUSPECT_ALIGNMENT = "suspect_alignment"  # the quarantine reason

MIN_PAIRS = 50  # fewer usable pairs in a file: no robust median/MAD, no check
MAD_TO_SD = 1.4826  # MAD * this = the standard deviation of a normal distribution
LENGTH_LIMIT = 10.0  # robust z of the log length ratio beyond which a pair is suspect
PROFILE_LIMIT = 8.0  # robust z of the letter-share difference beyond which a pair is suspect
LENGTH_SCALE_FLOOR = 0.05  # log units: files whose pairs all have the same ratio (MAD 0)
PROFILE_SCALE_FLOOR = 0.02  # letter share: the same for the character profile
COST_CAP = 5.0  # one odd pair moves the shift statistic by at most this much
ALLOWANCE = 0.7  # the CUSUM's drift per pair: a neighbour that fits just as well never adds up
SHIFT_ALARM = 14.0  # the CUSUM level that means "shifted": real data stays below 8.5
OFFSETS = (1, -1, 2, -2)  # src[i] against tgt[i + k]: one or two lines missing on either side
HORIZON = 20  # pairs past the alarm that decide which offset fits
MAX_SUSPECT_SHARE = 0.02  # more suspect pairs than this stop ingest ...
MIN_SUSPECTS_TO_STOP = 5  # ... when they are at least this many


# ---------------------------------------------------------------- the checks, on texts


@dataclass(frozen=True)
class Robust:
    """A robust location and scale: the median and MAD * 1.4826 (at least `floor`)."""

    center: float
    scale: float

    @classmethod
    def of(cls, values: Sequence[float], floor: float) -> Robust:
        center = median(values)
        return cls(center, max(MAD_TO_SD * median(abs(value - center) for value in values), floor))

    def z(self, value: float) -> float:
        return (value - self.center) / self.scale


@dataclass(frozen=True)
class Shift:
    """A stretch where src[i] fits tgt[i + offset] better than tgt[i] (indexes into the pairs)."""

    start: int  # the first shifted pair
    offset: int
    detected_at: int  # the pair at which the alarm went off


@dataclass
class Screen:
    """What the checks found in one file's pairs."""

    checked: int  # usable pairs looked at (0: too few to judge)
    suspects: dict[int, str] = field(default_factory=dict)  # index -> reason
    shift: Optional[Shift] = None

    @property
    def too_many_suspects(self) -> bool:
        n = len(self.suspects)
        return n >= MIN_SUSPECTS_TO_STOP and n > MAX_SUSPECT_SHARE * self.checked


def letter_share(text: str) -> float:
    return sum(map(str.isalpha, text)) / len(text)


def screen_texts(pairs: Sequence[Optional[tuple[str, str]]]) -> Screen:
    """Check (src, tgt) pairs in file order; None for a pair with nothing to compare (empty side,
    unreadable), which is skipped but keeps its place (a blank line is a typical cause of shifts)."""
    usable = [i for i, pair in enumerate(pairs) if pair is not None]
    if len(usable) < MIN_PAIRS:
        return Screen(checked=0)
    log_src: list[Optional[float]] = [None] * len(pairs)
    log_tgt: list[Optional[float]] = [None] * len(pairs)
    profile: dict[int, float] = {}
    for i in usable:
        src, tgt = pairs[i]
        log_src[i], log_tgt[i] = math.log(len(src) + 1), math.log(len(tgt) + 1)
        profile[i] = letter_share(tgt) - letter_share(src)
    length = length_model(log_src, log_tgt, usable)
    letters = Robust.of(list(profile.values()), PROFILE_SCALE_FLOOR)
    screen = Screen(checked=len(usable))
    for i in usable:
        ratio_z, profile_z = length.z(log_tgt[i] - log_src[i]), letters.z(profile[i])
        if abs(ratio_z) > LENGTH_LIMIT:
            ratio, typical = math.exp(log_tgt[i] - log_src[i]), math.exp(length.center)
            screen.suspects[i] = (
                f"length ratio target/source {ratio:.2f}, the file's median is {typical:.2f} "
                f"({ratio_z:+.1f} robust sd, limit {LENGTH_LIMIT})"
            )
        elif abs(profile_z) > PROFILE_LIMIT:
            src, tgt = pairs[i]
            screen.suspects[i] = (
                f"letters are {letter_share(src):.0%} of the source but {letter_share(tgt):.0%} of the target "
                f"({profile_z:+.1f} robust sd from the file's median difference, limit {PROFILE_LIMIT})"
            )
    screen.shift = find_shift(log_src, log_tgt, length)
    return screen


def length_model(log_src: Sequence[Optional[float]], log_tgt: Sequence[Optional[float]], usable: Sequence[int]) -> Robust:
    """Center: the median log length ratio of the pairs as they are. Scale: the MAD of each pair's
    best fit among target lines i-1, i and i+1, which a shifted stretch does not inflate (the plain
    MAD grows 3.5-fold when most of a file is shifted, and the shift then hides in the noise)."""
    center = median(log_tgt[i] - log_src[i] for i in usable)
    n, best = len(log_src), []
    for i in usable:
        fits = [abs(log_tgt[j] - log_src[i] - center) for j in (i - 1, i, i + 1) if 0 <= j < n and log_tgt[j] is not None]
        best.append(min(fits))
    return Robust(center, max(MAD_TO_SD * median(best), LENGTH_SCALE_FLOOR))


def find_shift(log_src: Sequence[Optional[float]], log_tgt: Sequence[Optional[float]], length: Robust) -> Optional[Shift]:
    """The first stretch where a neighbouring target line fits clearly better than the same line."""
    n = len(log_src)
    # in robust sd units, so that |tgt[j] - src[i]| is the |z| of the pair (src[i], tgt[j])
    src = [None if value is None else value / length.scale for value in log_src]
    tgt = [None if value is None else (value - length.center) / length.scale for value in log_tgt]
    aligned = [None if s is None or t is None else min(abs(t - s), COST_CAP) for s, t in zip(src, tgt)]
    gains: dict[int, list[float]] = {}
    alarm = n  # the first pair where any offset's CUSUM passes SHIFT_ALARM
    for offset in OFFSETS:
        neighbour = tgt[offset:] + [None] * offset if offset > 0 else [None] * -offset + tgt[:offset]
        # c_0 - c_k per pair (> 0: the neighbour fits better); 0 where either has nothing to compare
        gain = [0.0 if c is None or t is None else c - min(abs(t - s), COST_CAP) for s, t, c in zip(src, neighbour, aligned)]
        gains[offset], level = gain, 0.0
        for i in range(alarm):
            if aligned[i] is not None:
                level = max(0.0, level + gain[i] - ALLOWANCE)
                if level > SHIFT_ALARM:
                    alarm = i
                    break
    if alarm == n:
        return None
    # The offset whose running sum of gains rises most, up to HORIZON pairs past the alarm: in a
    # shifted stretch c_0 and a wrong neighbour's c_k are both random, and the wrong one can pass
    # the alarm first by chance; the right one keeps rising.
    rise, start, offset = max((*change_point(gains[k], aligned, min(n, alarm + 1 + HORIZON)), k) for k in OFFSETS)
    return Shift(start, offset, alarm)


def change_point(gain: Sequence[float], aligned: Sequence[Optional[float]], end: int) -> tuple[float, int]:
    """(rise, start) over gain[:end]: the largest rise of the running sum of gains, and where it
    started (the last lowest point before it). The start moves back over pairs with nothing to
    compare right before it: a blank line is usually where it broke."""
    lowest, low_at, running, rise, start = 0.0, 0, 0.0, 0.0, 0
    for i in range(end):
        if running <= lowest:
            lowest, low_at = running, i
        running += gain[i]
        if running - lowest > rise:
            rise, start = running - lowest, low_at
    while start > 0 and aligned[start - 1] is None:
        start -= 1
    return rise, start


# ---------------------------------------------------------------- ingest's records


def texts_of(pair: Record) -> Optional[tuple[str, str]]:
    """The whitespace-normalised sides, or None when there is nothing to compare."""
    if pair.problem is not None:
        return None
    src, tgt = clean_text(pair.values.get("source")), clean_text(pair.values.get("target"))
    return (src, tgt) if src and tgt else None


def file_of(pair: Record) -> tuple[str, ...]:
    """The file(s) a pair came from; a text pair's `file` can name one side, its `files` both."""
    return tuple(pair.files.values()) if pair.files else (pair.file,)


def screen_pairs(pairs: Sequence[Record], field_name: str, unit: str = "line") -> dict[int, Bad]:
    """index in `pairs` -> the `suspect_alignment` Bad of each suspect pair, checked per input file.
    Raises DataError (one line, naming `<field_name>.path`, the file(s) and the first `unit`) when
    a stretch is shifted or too many pairs are suspect: then the files, not the pairs, are wrong."""
    suspects: dict[int, Bad] = {}
    begin = 0
    while begin < len(pairs):
        files = file_of(pairs[begin])
        end = begin
        while end < len(pairs) and file_of(pairs[end]) == files:
            end += 1
        segment = pairs[begin:end]
        screen = screen_texts([texts_of(pair) for pair in segment])
        where = f"{field_name}.path: {' and '.join(files)}"
        if screen.shift is not None:
            raise DataError(shift_message(where, files, segment, screen.shift, unit))
        if screen.too_many_suspects:
            first = segment[min(screen.suspects)].row
            share = len(screen.suspects) / screen.checked
            raise DataError(
                f"{where}: {len(screen.suspects)} of {screen.checked} pairs ({share:.1%}, more than "
                f"{MAX_SUSPECT_SHARE:.0%}) have a length ratio or letter share far off the file's typical pair, "
                f"the first at {unit} {first}: the two sides look misaligned or mixed up; check the input"
            )
        suspects.update({begin + i: Bad(SUSPECT_ALIGNMENT, reason) for i, reason in screen.suspects.items()})
        begin = end
    return suspects


def shift_message(where: str, files: tuple[str, ...], segment: Sequence[Record], shift: Shift, unit: str) -> str:
    first, seen = segment[shift.start].row, segment[shift.detected_at].row
    src, tgt = (files[0], files[1]) if len(files) == 2 else ("the source", "the target")
    return (
        f"{where}: {unit}s look misaligned from {unit} {first} (from there, by sentence lengths, {unit} i of "
        f"{src} fits {unit} i{shift.offset:+d} of {tgt} better than {unit} i, clearly so by {unit} {seen}): "
        f"check for a missing or extra {unit} near {unit} {first}"
    )
