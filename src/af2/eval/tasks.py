"""Benchmark tasks: an example type, a task type, and the registry (a dict plus a decorator).

A task is a loader (benchmark files on disk -> examples), a prompt template (example -> the text
the model is asked) and a scorer (examples + predictions -> metrics). Tasks produce requests; the
runner batches them through an adapter; the task's scorer scores the answers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from af2.errors import RequestError


@dataclasses.dataclass(frozen=True)
class Example:
    """One benchmark item. ``reference`` is the gold answer (a list of captions for captioning)."""

    id: str
    audio: str  # absolute path of the audio file
    question: str
    reference: str | list[str]
    choices: tuple[str, ...] = ()
    category: str = "all"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Task:
    """A benchmark: where its files live, how to read them, what to ask, how to score."""

    name: str
    version: str  # bump when the loader, prompt or scorer changes what a number means
    folder: str  # default sub-folder of --data-root
    loader: Callable[[Path], list[Example]]
    prompt_template: str  # str.format fields: question, options, choices_inline
    scorer_name: str
    description: str
    data_source: str  # where users get the data

    def load(self, root: Path) -> list[Example]:
        if not root.exists():
            raise RequestError(
                f"task {self.name}: data folder {root} does not exist; put the benchmark there "
                f"(see the README section 'Evaluation': {self.data_source}) or pass --data {self.name}=PATH"
            )
        examples = self.loader(root)
        if not examples:
            raise RequestError(f"task {self.name}: no examples found under {root}")
        ids = [e.id for e in examples]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
            raise RequestError(f"task {self.name}: duplicate example ids under {root}: {dup}")
        return sorted(examples, key=lambda e: e.id)

    def prompt(self, example: Example) -> str:
        letters = "ABCDEFGHIJ"
        options = " ".join(f"({letters[i]}) {c}." for i, c in enumerate(example.choices))
        return self.prompt_template.format(
            question=example.question.strip(),
            options=options,
            choices_inline=", ".join(example.choices),
        ).strip()


TASKS: dict[str, Task] = {}


def register_task(
    name: str,
    *,
    version: str,
    folder: str,
    prompt: str,
    scorer: str,
    description: str,
    data_source: str,
) -> Callable[[Callable[[Path], list[Example]]], Callable[[Path], list[Example]]]:
    """Decorator for a loader function: ``@register_task("mmau-test-mini", ...)``."""

    def wrap(loader: Callable[[Path], list[Example]]) -> Callable[[Path], list[Example]]:
        if name in TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        TASKS[name] = Task(name, version, folder, loader, prompt, scorer, description, data_source)
        return loader

    return wrap


def get_task(name: str) -> Task:
    import af2.eval.catalog  # noqa: F401  (registers the built-in tasks)

    if name not in TASKS:
        raise RequestError(f"unknown task {name!r}; `af2 eval --list-tasks` names them: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def all_tasks() -> dict[str, Task]:
    import af2.eval.catalog  # noqa: F401

    return dict(sorted(TASKS.items()))
