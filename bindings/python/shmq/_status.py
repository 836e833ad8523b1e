"""Status codes of the C ABI (``enum shmq_status`` in ``include/shmq.h``).

The header is the single source of truth; ``tests/test_header.py`` parses it and fails
if these numbers ever drift from it.
"""

from __future__ import annotations

import enum

__all__ = ["Status"]


class Status(enum.IntEnum):
    """A ``shmq_status`` value. The numbers are stable: they never change meaning."""

    OK = 0
    ERR_FULL = 1
    ERR_EMPTY = 2
    ERR_TIMEOUT = 3
    ERR_CLOSED = 4
    ERR_INVALID_ARGUMENT = 5
    ERR_ALREADY_EXISTS = 6
    ERR_NOT_FOUND = 7
    ERR_PERMISSION_DENIED = 8
    ERR_CREATION_FAILED = 9
    ERR_ACCESS_FAILED = 10
    ERR_MESSAGE_TOO_LARGE = 11
    ERR_BUFFER_TOO_SMALL = 12
    ERR_CORRUPTED_DATA = 13
    ERR_INCOMPATIBLE_VERSION = 14
    ERR_INTERNAL = 15
    ERR_ROLE_TAKEN = 16

    @property
    def c_name(self) -> str:
        """The constant's name in the C header, e.g. ``SHMQ_ERR_FULL``."""
        return f"SHMQ_{self.name}"


# Flags and constants of the header that Python uses (also checked against it).
CREATE_NO_CHECKSUM = 1
CREATE_OPEN_EXISTING = 2
CREATE_REPLACE = 4
CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER = 8
MESSAGE_REDELIVERED = 1
WAIT_SLICE = 1
