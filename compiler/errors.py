"""Errors of the compiler: bad input (the user's to fix) versus our own bugs.

Every problem with input names the file, the object and the field, so a user can fix
all of them in one pass; the loader and the validators collect problems instead of
stopping at the first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with the input.

    ``file`` is the path as the user gave it (or ``<stdin>``), ``obj`` names the object
    (``NetworkPolicy x/deny-all``, or ``document 3`` when the object has no usable name),
    ``field`` is the API field path in the API's own spelling (``spec.ingress[0].ports[1].endPort``),
    empty when the problem is with the whole document.
    """

    file: str
    obj: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.obj}"
        if self.field:
            where += f": {self.field}"
        return f"{where}: {self.message}"


class StockadeError(Exception):
    """Base of every error the compiler raises on purpose."""


class InputError(StockadeError):
    """The input is wrong; ``problems`` lists every problem found, sorted."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(sorted(set(problems), key=_natural))
        if not self.problems:
            raise InternalError("InputError raised with no problems")
        super().__init__("\n".join(str(p) for p in self.problems))


def _natural(problem: Problem) -> tuple[tuple[tuple[int, str], ...], ...]:
    """Sort key that orders numbers by value, so ``document 2`` comes before ``document 10`` and
    ``ingress[2]`` before ``ingress[10]``: problems read in the order they stand in the file."""

    def split(text: str) -> tuple[tuple[int, str], ...]:
        return tuple((int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", text))

    return (split(problem.file), split(problem.obj), split(problem.field), split(problem.message))


class OptionError(StockadeError):
    """A compile option cannot be used (for example a pod interface prefix nft cannot match)."""


class InternalError(StockadeError):
    """A bug in Stockade, never the user's fault; carries its cause via ``raise ... from``."""


class PeerError(StockadeError):
    """A source or destination given to the semantics (``stockade explain --from/--to``) is unusable."""


class UnknownPeerError(PeerError):
    """A pod named as a source or destination is not in the model; ``candidates`` are near matches."""

    def __init__(self, role: str, key: str, *, candidates: Iterable[str] = ()) -> None:
        self.role = role
        self.key = key
        self.candidates: tuple[str, ...] = tuple(candidates)
        hint = f"; did you mean {', '.join(self.candidates)}?" if self.candidates else ""
        super().__init__(f"{role} pod {key} is not in the model{hint}")
