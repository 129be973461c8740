"""Progress bars (tqdm) for long fits and batched predictions, shown only where a person watches."""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

    from tabpfn_gateway.protocol.messages import GetFitStatusResponse

__all__ = ["FitProgress", "PredictProgress", "in_notebook", "progress_wanted"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (notebook, lab, VS Code), where stderr is no TTY."""
    if "ipykernel" not in sys.modules:
        return False
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_wanted(enabled: bool) -> bool:
    """Whether to draw bars: asked for, and stderr is a terminal or this is a notebook.

    Logs, CI and pipes (stderr not a TTY) get no bars: they would fill them with
    carriage-return noise.
    """
    if not enabled:
        return False
    if in_notebook():
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        return False


def _new_bar(**kwargs: Any) -> tqdm[Any]:
    # Widgets only when ipywidgets is importable; tqdm.autonotebook would warn otherwise.
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(**kwargs)
    from tqdm.std import tqdm as std_tqdm

    return std_tqdm(file=sys.stderr, **kwargs)


class FitProgress:
    """An ``on_poll`` callback: a bar showing an async fit's status and elapsed time.

    Created silently; the bar appears at the first poll (a synchronous fit never polls, so
    short fits draw nothing). Call :meth:`close` when the fit returns or fails.
    """

    def __init__(self, enabled: bool, *, description: str = "TabPFN fit") -> None:
        self.enabled = enabled
        self.description = description
        self.polls = 0
        self._bar: tqdm[Any] | None = None

    def __call__(self, status: GetFitStatusResponse) -> None:
        self.polls += 1
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = _new_bar(
                desc=self.description,
                total=None,
                unit="poll",
                bar_format="{desc}: {elapsed} {postfix}",
                leave=False,
            )
        state = getattr(status.status, "value", status.status)
        self._bar.set_postfix_str(f"{state}", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class PredictProgress:
    """A bar over test rows, advanced once per batch; drawn only for more than one batch."""

    def __init__(
        self, enabled: bool, *, total_rows: int, batches: int, description: str = "TabPFN predict"
    ) -> None:
        self._bar: tqdm[Any] | None = None
        if enabled and batches > 1:
            self._bar = _new_bar(desc=description, total=total_rows, unit="rows", leave=False)

    def advance(self, rows: int) -> None:
        if self._bar is not None:
            self._bar.update(rows)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
