"""A job that runs on an interval in every replica (the replica holding its lease does the
work), with jitter so that replicas do not line up."""

from __future__ import annotations

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from typing import ClassVar

logger = logging.getLogger(__name__)


class PeriodicJob(ABC):
    name: ClassVar[str]
    running = False  # readiness: the loop is alive

    @abstractmethod
    async def run_once(self) -> object:
        """One run; an exception is logged and the next run goes ahead."""

    async def run(self, interval_s: float) -> None:
        """Run every interval (0.8 to 1.2 of it) until cancelled."""
        self.running = True
        try:
            while True:
                try:
                    await self.run_once()
                except Exception as error:
                    logger.warning("%s run failed", self.name, extra={"error": str(error)})
                await asyncio.sleep(interval_s * random.uniform(0.8, 1.2))
        finally:
            self.running = False
