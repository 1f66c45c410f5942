"""What a malicious pickle carries, for the tests of the restricted unpickler and the importers that use it."""
from __future__ import annotations

import os


class RunsACommand:
    """Unpickling this calls os.system, which creates `marker`: a test sees whether it ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)
