"""How loading a CSV says no: to the caller, or to itself (take the slow, reference path)."""

from __future__ import annotations


class CsvFormatError(Exception):
    """The file cannot be served as a table; the message says why and where."""


class ReadAsText(Exception):
    """A column read straight as numbers may not match the reference rules: read it as text."""
