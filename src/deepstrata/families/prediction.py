"""One predicted label: what ``predict`` answers for an image file (text runs add the text's own fields)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Prediction:
    path: str
    label: str
    probability: float

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "probability": round(self.probability, 6)}
