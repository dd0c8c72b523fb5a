"""The built-in benchmarks, one module per family, and the lookup functions.

Importing this package registers every built-in task in ``af2.eval.registry.TASKS``. The registry
never imports this package, so there is no import cycle: code that needs a task by name imports
``get_task`` from here.
"""

from __future__ import annotations

from af2.errors import RequestError
from af2.eval.benchmarks import captions, choice_qa, classification, open_qa  # noqa: F401  (registers)
from af2.eval.registry import TASKS, Task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise RequestError(f"unknown task {name!r}; `af2 eval --list-tasks` names them: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def all_tasks() -> dict[str, Task]:
    return dict(sorted(TASKS.items()))
