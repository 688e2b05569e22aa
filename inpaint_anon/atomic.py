"""Outputs that appear whole or not at all."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self


class CommitOnExit(ABC):
    """A writer used as a context manager: a clean exit :meth:`close`\\ s it (the result appears under its
    final name), an exception :meth:`abort`\\ s it (nothing is left behind, not even a temporary file)."""

    @abstractmethod
    def close(self) -> None:
        """Finish and publish the output."""

    @abstractmethod
    def abort(self) -> None:
        """Discard everything written so far."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
