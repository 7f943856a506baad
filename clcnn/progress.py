"""The training progress display: a tqdm bar on a terminal (stderr), plain lines in a log (Keras's habit).

    bar = Progress(total_steps=938, done=0, batch_size=64, desc="epoch 1/3", mode="bar")
    bar.update(steps=1, images=64); bar.set_loss(0.51); bar.close()
"""
from __future__ import annotations

import sys
import time

LINES_EVERY = 0.1        # "lines" mode: a line each time another tenth of the epoch is done ...
MIN_LINE_SECONDS = 1.0   # ... and at least this long after the previous line


def _clock(seconds: float) -> str:
    """Seconds as H:MM:SS (or M:SS under an hour)."""
    s = int(round(max(seconds, 0.0)))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class Progress:
    """Epoch progress: step, loss, images/s and ETA.

    Args:
        total_steps: the epoch's steps; done: steps already done (a resumed epoch starts there).
        desc: the prefix ("epoch 2/5"). mode: "bar" (tqdm on ``file``, default stderr), "lines" (plain lines
            through ``log`` at every tenth of the epoch, at most one per MIN_LINE_SECONDS) or "off".
        log: where "lines" go (the training log, stdout by default).
    """

    def __init__(self, total_steps: int, done: int = 0, desc: str = "", mode: str = "bar", log=print, file=None,
                 min_seconds: float = MIN_LINE_SECONDS):
        if mode not in ("bar", "lines", "off"):
            raise ValueError(f"progress mode must be bar, lines or off (got {mode!r})")
        self.total, self.step, self.first, self.desc, self.mode, self.log = total_steps, done, done, desc, mode, log
        self.images, self.loss, self.min_seconds = 0, None, min_seconds
        self.t0 = self.last_line = time.perf_counter()
        self._next = self._next_tenth(done)
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm
            self._bar = tqdm(total=total_steps, initial=done, desc=desc, unit="step", leave=False,
                             dynamic_ncols=True, file=file or sys.stderr,
                             bar_format="{desc}: {n_fmt}/{total_fmt} steps |{bar}| [{elapsed}<{remaining}]"
                                        "{postfix}")

    def _next_tenth(self, step: int) -> int:
        """The first step past ``step`` at a tenth of the epoch."""
        tenth = max(1, int(self.total * LINES_EVERY))
        return (step // tenth + 1) * tenth

    def rate(self) -> float:
        """Images per second since this display started."""
        return self.images / max(time.perf_counter() - self.t0, 1e-9)

    def eta(self) -> float:
        """Seconds left in the epoch at the current step rate."""
        ran = self.step - self.first   # steps run by this display (a resumed epoch's earlier ones are not)
        return (self.total - self.step) * (time.perf_counter() - self.t0) / max(ran, 1)

    def set_loss(self, loss: float) -> None:
        """The latest mean training loss to show."""
        self.loss = loss
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)

    def _postfix(self) -> str:
        loss = "" if self.loss is None else f"loss {self.loss:.4f}, "
        return f"{loss}{self.rate():,.0f} img/s"

    def update(self, steps: int = 1, images: int = 0) -> None:
        """``steps`` more steps done, of ``images`` images in all."""
        self.step, self.images = self.step + steps, self.images + images
        if self._bar is not None:
            self._bar.update(steps)
        elif self.mode == "lines" and self.step >= self._next and self.step < self.total:
            self._next = self._next_tenth(self.step)
            now = time.perf_counter()
            if now - self.last_line >= self.min_seconds:
                self.last_line = now
                self.log(self.line())

    def line(self) -> str:
        """One plain progress line: "epoch 1/3  step 94/938  loss 0.6123  2,345 img/s  ETA 0:41"."""
        loss = "" if self.loss is None else f"  loss {self.loss:.4f}"
        return (f"{self.desc}  step {self.step}/{self.total}{loss}  {self.rate():,.0f} img/s  "
                f"ETA {_clock(self.eta())}")

    def close(self) -> None:
        """Remove the bar (the epoch's summary line follows)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
