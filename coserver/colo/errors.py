"""COLO mechanism errors: which step of which role failed, and why, in one line."""

from __future__ import annotations

from coserver.errors import CoserverError


class ColoError(CoserverError):
    """A COLO step failed."""


class ColoStepError(ColoError):
    """One named step of a start, sync or failover sequence failed."""

    def __init__(self, role: str, node: str, step: str, reason: object) -> None:
        self.role, self.node, self.step = role, node, step
        self.reason = str(reason)
        super().__init__(f"{role} {node}: step '{step}' failed: {reason}")
