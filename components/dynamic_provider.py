"""What our dynamic providers (OptimizedModel, PromotedModel, ImageCopy) share.

The engine pickles a provider with dill and runs it in another process, which may not be able to import
this package. So a provider holds no state and captures nothing: each method imports its worker module
(under artifacts/, no Pulumi there) from the project directory named in its props when it runs, and
`ship_by_value` makes dill carry the provider classes themselves.
"""

from __future__ import annotations

import inspect
from typing import Any

from pulumi.dynamic import ResourceProvider


class ProjectWorkerProvider(ResourceProvider):
    @staticmethod
    def import_worker(props: dict[str, Any], module: str) -> Any:
        """`module`, imported from the project wherever the provider process started (and set to report
        user errors in one line there)."""
        import importlib
        import sys

        project_dir = str(props["projectDir"])
        if project_dir not in sys.path:
            sys.path.insert(0, project_dir)
        worker = importlib.import_module(module)
        importlib.import_module("artifacts.build").report_user_errors_in_one_line()
        return worker


def ship_by_value(cls: type) -> None:
    """Make dill pickle a provider class (its bases of ours too) and its methods by value.

    dill pickles a class (and each method) by reference to its module unless it claims to live in
    __main__, and the engine's provider process may not be able to import this module. Pulumi itself
    once did the same rewrite.
    """
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] != "components":
            continue
        klass.__module__ = "__main__"
        for value in vars(klass).values():
            function = getattr(value, "__func__", value)
            if inspect.isfunction(function):
                function.__module__ = "__main__"


ship_by_value(ProjectWorkerProvider)
