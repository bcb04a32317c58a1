"""What every fake service shares: started and stopped around a ``with`` block."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TypeVar

S = TypeVar("S", bound="BackgroundService")


class BackgroundService(ABC):
    """A local service running in a background thread until :meth:`stop`."""

    @abstractmethod
    def start(self: S) -> S:
        """Start serving; returns the service."""

    @abstractmethod
    def stop(self) -> None:
        """Stop serving and release the port; what was recorded stays readable."""

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
