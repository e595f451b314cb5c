"""Errors unirep raises for bad input. The CLI turns each into one line and a non-zero exit.

Every message says what is wrong, where, and how to fix it, so a user never has to read a traceback.
"""


class UnirepError(Exception):
    """Base class: an input problem the user can fix (exit code 2 from the CLI)."""

    exit_code = 2


class UnknownNameError(UnirepError, KeyError):
    """A backbone, task, probe or other registered name that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(UnirepError):
    """Missing, corrupt or inconsistent data (images, labels, splits, features)."""


class WeightsError(UnirepError):
    """A weights file that is missing, unreadable or for another architecture."""


class ConfigError(UnirepError):
    """An invalid configuration value or file."""


class OutputError(UnirepError):
    """An output location that cannot be written."""


def yaml_problem(exc: Exception) -> str:
    """One line for a YAML parse error: where in the file (line, column) and what, e.g.
    "line 2, column 1: expected ',' or ']', but got '<stream end>'" (PyYAML's own message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem
