"""Training progress: a tqdm bar on a terminal, periodic plain lines anywhere else.

A SLURM log, a Ray worker's log or ``ganzip demo | tee run.log`` is not a
terminal. tqdm would write its carriage-return frames there, one endless line
of them. `progress_bar` gives such streams a `PlainProgress` instead: one
readable line every 5% of the run or every 30 s, whichever comes first, and a
last one when the run stops (a resumed run first says where it resumes)::

    compress crd: step 240/800 (30%) 12.1 step/s ETA 46s loss=0.412 crd=0.118 gan=0.69

``GANZIP_PROGRESS=bar`` or ``=lines`` forces one form (for a terminal that
cannot redraw, or a log viewer that can).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, TextIO

EVERY_SECONDS = 30.0
EVERY_FRACTION = 0.05


def format_seconds(seconds: float) -> str:
    """1234 -> "20m34s"; 5 -> "5s"; 7384 -> "2h03m"."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class PlainProgress:
    """The part of tqdm's interface the engine uses, printed as whole lines.

    A line is printed when the run has advanced `every_fraction` of its total
    since the last line, or `every_seconds` have passed, whichever comes
    first, and once more at `close` (if any step ran since the last line).
    Rate and ETA count only the steps run in this process (a resumed run's
    earlier steps are not part of its speed).
    """

    def __init__(self, total: int | None, *, initial: int = 0, desc: str = "", file: TextIO | None = None,
                 every_seconds: float = EVERY_SECONDS, every_fraction: float = EVERY_FRACTION,
                 clock: Callable[[], float] = time.monotonic, disable: bool = False):
        self.total = total
        self.n = initial
        self.desc = desc
        self.file = file
        self.disable = disable
        self.every_seconds = every_seconds
        self.every_steps = max(1, int(round((total or 0) * every_fraction))) if total else None
        self._clock = clock
        self._start_n = initial
        self._start = clock()
        self._last_n = initial
        self._last_t = self._start
        self._postfix: dict[str, Any] = {}
        self._closed = False
        if initial and not disable:  # a resumed run says so, and where it picks up
            of = f"/{total}" if total else ""
            print(f"{desc + ': ' if desc else ''}resuming at step {initial}{of}", file=self._stream(), flush=True)

    def _stream(self) -> TextIO:
        return self.file if self.file is not None else sys.stderr

    def set_postfix(self, values: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self._postfix = {**(values or {}), **kwargs}

    def update(self, n: int = 1) -> None:
        if self.disable or self._closed:
            self.n += n
            return
        self.n += n
        now = self._clock()
        if (self.every_steps is not None and self.n - self._last_n >= self.every_steps) or \
                now - self._last_t >= self.every_seconds:
            self._emit(now)

    def close(self) -> None:
        if not self.disable and not self._closed and self.n != self._last_n:
            self._emit(self._clock())
        self._closed = True

    def line(self, now: float) -> str:
        """The progress line for the current state (what `update` prints)."""
        parts = [f"{self.desc}: step {self.n}" if self.desc else f"step {self.n}"]
        if self.total:
            parts[0] += f"/{self.total} ({100 * self.n / self.total:.0f}%)"
        ran, elapsed = self.n - self._start_n, now - self._start
        if ran > 0 and elapsed > 0:
            rate = ran / elapsed
            parts.append(f"{rate:.3g} step/s" if rate >= 1 else f"{1 / rate:.3g} s/step")
            if self.total and self.n < self.total:
                parts.append(f"ETA {format_seconds((self.total - self.n) / rate)}")
            else:
                parts.append(f"took {format_seconds(elapsed)}")
        parts += [f"{k}={v}" for k, v in self._postfix.items()]
        return " ".join(parts)

    def _emit(self, now: float) -> None:
        print(self.line(now), file=self._stream(), flush=True)
        self._last_n, self._last_t = self.n, now


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(total: int | None, *, initial: int = 0, desc: str = "", disable: bool = False,
                 unit: str = "step", file: TextIO | None = None):
    """A tqdm bar when `file` (default stderr) is a terminal or a notebook, else a `PlainProgress`."""
    stream = file if file is not None else sys.stderr
    mode = os.environ.get("GANZIP_PROGRESS", "").strip().lower()
    bar = mode == "bar" or (mode != "lines" and (_is_terminal(stream) or "ipykernel" in sys.modules))
    if bar:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, disable=disable, file=stream, dynamic_ncols=True, desc=desc,
                    unit=unit)
    return PlainProgress(total, initial=initial, desc=desc, file=stream, disable=disable)


def progress_iter(iterable: Iterable, *, total: int | None = None, desc: str = "", unit: str = "it",
                  disable: bool = False, leave: bool = True, file: TextIO | None = None) -> Iterator:
    """`iterable`, with a bar on a terminal or plain lines elsewhere (tqdm's ``tqdm(iterable, ...)``)."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    stream = file if file is not None else sys.stderr
    bar = progress_bar(total, desc=desc, disable=disable, unit=unit, file=stream)
    if not isinstance(bar, PlainProgress):
        bar.leave = leave
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()


__all__ = ["PlainProgress", "format_seconds", "progress_bar", "progress_iter"]
