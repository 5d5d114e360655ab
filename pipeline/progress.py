"""Progress bars with ETA for long stages (tqdm), quiet when stderr is not a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Optional, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(
    it: Optional[Iterable[T]],
    desc: str,
    total: Optional[int] = None,
    unit: str = "it",
    leave: bool = False,
    initial: int = 0,
) -> Iterable[T]:
    # In CI logs a redrawn bar is noise: update rarely there, and never when EDGEKD_QUIET is set.
    tty = sys.stderr.isatty()
    return tqdm(
        it,
        desc=desc,
        total=total,
        unit=unit,
        initial=initial,
        leave=leave or not tty,
        dynamic_ncols=True,
        mininterval=0.5 if tty else 30.0,
        disable=bool(os.environ.get("EDGEKD_QUIET")) or not _main_rank(),
    )


def _main_rank() -> bool:
    # torchrun sets RANK; only rank 0 talks, the others would repeat it
    return os.environ.get("RANK", "0") == "0"


def log(msg: str) -> None:
    if not _main_rank():
        return
    print(f"[edgekd] {msg}", file=sys.stderr, flush=True)
