"""A griffe extension: fills the estimators' ``{shared_parameters}`` placeholder in the API
reference with the shared parameter block, as the estimators themselves do at import time."""

from __future__ import annotations

import textwrap
from typing import Any

import griffe


class SharedParameters(griffe.Extension):
    """Replace ``{shared_parameters}`` in class docstrings with ``SHARED_PARAMETER_DOCS``."""

    def on_class_instance(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        """Fill the placeholder of one class's docstring, when it has one."""
        docstring = cls.docstring
        if docstring is None or "{shared_parameters}" not in docstring.value:
            return
        from tabpfn_gateway.estimators._base import SHARED_PARAMETER_DOCS

        docstring.value = docstring.value.replace(
            "{shared_parameters}\n", textwrap.dedent(SHARED_PARAMETER_DOCS) + "\n"
        )
