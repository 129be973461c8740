"""Progress bars: drawn for polled fits and batched predictions when a person watches (a TTY
or a notebook), never with progress=False, never into pipes and logs."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import redirect_stderr

import numpy as np
import pytest
from sklearn.datasets import load_iris
from tests.test_estimator import SmallLimitsFake, _limit

from tabpfn_gateway import GatewayClassifier
from tabpfn_gateway.estimators._progress import in_notebook, progress_wanted
from tabpfn_gateway.testing import FakeTabPFN, local_gateway
from tabpfn_gateway.testing.local import LOCAL_TABPFN_TOKEN, LocalGateway


class TTYBuffer(io.StringIO):
    """What a terminal's stderr looks like to the code: a stream that says it is a TTY."""

    def isatty(self) -> bool:
        return True


# stderr is swapped inside each test body (redirect_stderr): pytest's output capturing
# re-installs its own sys.stderr between fixture setup and the test call.


@pytest.fixture
def polling_backend() -> Iterator[LocalGateway]:
    # Async fits stay pending for 3 polls: what a long fit looks like to the client.
    fake = FakeTabPFN(tokens=[LOCAL_TABPFN_TOKEN], pending_polls=3)
    with local_gateway(fake=fake) as backend:
        yield backend


def test_decision() -> None:
    with redirect_stderr(TTYBuffer()):
        assert progress_wanted(True) is True
        assert progress_wanted(False) is False
        assert in_notebook() is False
    with redirect_stderr(io.StringIO()):
        assert progress_wanted(True) is False


def test_polled_fit_shows_a_bar(polling_backend: LocalGateway) -> None:
    X, y = load_iris(return_X_y=True)
    with redirect_stderr(TTYBuffer()) as tty:
        GatewayClassifier(backend=polling_backend, api_mode="async").fit(X, y)
    text = tty.getvalue()
    assert "TabPFN fit" in text
    assert "pending" in text
    assert polling_backend.fake.requests_to("/tabpfn/get_fit_status")


def test_synchronous_fit_draws_nothing() -> None:
    X, y = load_iris(return_X_y=True)
    with local_gateway() as backend, redirect_stderr(TTYBuffer()) as tty:
        GatewayClassifier(backend=backend, api_mode="sync").fit(X, y)
    assert tty.getvalue() == ""


def test_progress_false_and_pipes_stay_silent(polling_backend: LocalGateway) -> None:
    X, y = load_iris(return_X_y=True)
    with redirect_stderr(TTYBuffer()) as terminal:
        GatewayClassifier(backend=polling_backend, api_mode="async", progress=False).fit(X, y)
    assert terminal.getvalue() == ""
    with redirect_stderr(io.StringIO()) as piped:
        GatewayClassifier(backend=polling_backend, api_mode="async").fit(X, y)
    assert piped.getvalue() == ""
    # Both fits did poll: silence came from the decision, not from a fit without polls.
    assert len(polling_backend.fake.requests_to("/tabpfn/get_fit_status")) >= 6


def test_batched_prediction_shows_rows() -> None:
    X, y = load_iris(return_X_y=True)
    fake = SmallLimitsFake(limit=_limit(test_set_max_rows=50))
    with local_gateway(fake=fake) as backend, redirect_stderr(TTYBuffer()) as tty:
        clf = GatewayClassifier(backend=backend).fit(X, y)
        clf.predict(X[:40])  # one batch: no bar
        assert tty.getvalue() == ""
        predicted = clf.predict(X)  # three batches
    text = tty.getvalue()
    assert "TabPFN predict" in text
    assert "/150" in text  # a bar over the 150 test rows (redraws are rate-limited)
    assert predicted.shape == (150,)
    assert np.mean(predicted == y) > 0.9


def test_notebooks_are_detected() -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(
        nbformat.v4.new_code_cell(
            "from tabpfn_gateway.estimators._progress import in_notebook, progress_wanted\n"
            "print(in_notebook(), progress_wanted(True), progress_wanted(False))"
        )
    )
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    output = notebook.cells[0].outputs[0]["text"].strip()
    assert output == "True True False"
