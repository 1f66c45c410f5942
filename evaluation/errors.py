"""Exception types of the evaluation suite; each message is one line saying what is wrong and how to fix it."""
from __future__ import annotations


class EvaluationError(ValueError):
    """Bad input to a metric, runner or report (wrong shape, mismatched frame counts, unreadable folder)."""


class WeightsFormatError(EvaluationError):
    """A weight file exists but does not hold the network it should (wrong keys, unsafe format)."""
