"""The controller's part of coserver's exception tree: the world's faults apart from our bugs.

    CoserverError                      the world's fault: log it, the next tick tries again
     +-- ControllerError
          +-- ConfigError              the controller's configuration is unusable (stops at start)
          +-- ControlError             a control-socket request could not be asked or was refused
          +-- HeartbeatError           heartbeat set-up: key file, socket, configuration
          +-- JournalError             the journal could not be written or read
          |    +-- JournalCorrupt      the file is there but is no valid journal: refuse to guess
          |    +-- JournalMismatch     a valid journal of another FT server or host: refuse to use it
          +-- WitnessError             the witness answered something we cannot use
               +-- WitnessUnreachable  no answer within the deadline, or connection refused
    CoserverBug                        our own bug: the controller stops, its supervisor restarts it
     +-- IllegalTransition             a state change the table does not allow
"""

from __future__ import annotations

from coserver.errors import CoserverBug, CoserverError


class ControllerError(CoserverError):
    """Anything the controller meets that is not its own bug."""


class ConfigError(ControllerError):
    """The controller's configuration is unusable."""


class ControlError(ControllerError):
    """The controller could not be asked, or it refused the request."""


class HeartbeatError(ControllerError):
    """A heartbeat set-up problem (key file, socket, configuration)."""


class JournalError(ControllerError):
    """The journal could not be written or read."""


class JournalCorrupt(JournalError):
    """The journal file exists but is not a valid journal: refuse to guess."""


class JournalMismatch(JournalError):
    """The journal is valid but was written for another FT server or host (the config says otherwise)."""


class WitnessError(ControllerError):
    """The witness answered something we cannot use (bad record, bad request)."""


class WitnessUnreachable(WitnessError):
    """The witness did not answer within the deadline, or refused the connection."""


class IllegalTransition(CoserverBug):
    """A state change the table does not allow: a controller bug, refused (the daemon stops on it)."""
