"""The class names a detector answers, shared by every outbound protocol's reader.

Models name a detection's class by number, by text, or both; the merge step wants small
ints.  One table per request maps the model's (number, text) pairs to them, learning names
it was not configured with, so a count is never lost to an unexpected label.
"""

from __future__ import annotations

from collections.abc import Sequence


class LabelTable:
    """Maps the model's (class number, text) pairs to small ints for the merge step."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels: list[str] = list(labels)
        self.values: list[float] = [float(i + 1) for i in range(len(labels))]
        self._index = {text: i for i, text in enumerate(self.labels)}

    def index(self, text: str | None, value: float | None) -> int:
        if text is None:
            if value is not None and 1 <= value <= len(self.labels) and value == int(value):
                return int(value) - 1
            text = "unknown" if value is None else f"class_{value:g}"
        i = self._index.get(text)
        if i is None:
            i = self._index[text] = len(self.labels)
            self.labels.append(text)
            self.values.append(float(value) if value is not None else float(i + 1))
        elif value is not None:
            self.values[i] = float(value)
        return i
