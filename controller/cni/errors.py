"""CNI errors: what the plugin prints on stdout (and exits non-zero with) when a command fails.

Codes are the spec's well-known ones (CNI 1.1, "Error") where one fits, and Stockade's own from
100 up otherwise. The message says what is wrong and names the field or variable; ``details``
carries the cause (an errno text, the kernel's answer) for logs.
"""

from __future__ import annotations

import json
from typing import Any

# The spec's well-known codes.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
# STATUS only: the plugin cannot serve ADD now.
NOT_AVAILABLE = 50

# Stockade's own (100 and up, as the spec reserves them for plugins).
ADDRESSES_EXHAUSTED = 100
LINK_FAILURE = 101
AGENT_REFUSED = 102
CHECK_FAILED = 103
INTERFACE_CONFLICT = 104
# A bug in stockade-cni (an exception it did not expect); the message names the exception.
INTERNAL = 199


class CniError(Exception):
    """A failed command, as the spec's error object."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> str:
        body: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            body["details"] = self.details
        return json.dumps(body)

    def __str__(self) -> str:
        return f"{self.msg} ({self.details})" if self.details else self.msg
