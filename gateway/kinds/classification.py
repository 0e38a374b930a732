"""Classification: each image sent whole (downscaled to ``max_side`` if asked), labels and
scores back, as an AutoML Vision Edge classification export answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.codecs import tfserving_api
from gateway.config import ServiceConfig
from gateway.kinds.base import CliView, Kind, Output
from gateway.schema import INTEGER, STRING, ConfigError, Fields, ListOf, Setting
from gateway.usecases.classification import Classifications, classify


@dataclass(frozen=True)
class ClassificationOptions:
    labels: tuple[str, ...]  # names for a model that answers scores only; empty: the model's
    max_side: int | None  # larger images are downscaled to this side, aspect kept


class Classification(Kind):
    name = "classification"
    description = "labels a whole image: a label, its score and every label's score"
    fields = Fields(
        {
            "labels": Setting(ListOf(STRING), []),
            "max_side": Setting(INTEGER, None, lo=32, hi=16384),
        }
    )
    routes = (":classify", ":predict", "infer", "vertex")
    role = "classifier"
    compares = "images"
    cli = CliView(
        route=":classify",
        columns=("label", "score", "seconds"),
        csv_fields=("path", "label", "score", "width", "height", "seconds", "error", "code"),
        counts=False,
    )
    outputs = (Output("scores", "FP32", (-1, -1)), Output("labels", "BYTES", (-1, -1)))

    def options(self, values: dict[str, Any], where: str) -> ClassificationOptions:
        labels = values["labels"]
        if not all(labels):
            raise ConfigError(f"{where}.labels must be a list of non-empty strings")
        return ClassificationOptions(tuple(labels), values["max_side"])

    def public(self, service: ServiceConfig) -> dict[str, Any]:
        o: ClassificationOptions = service.options
        return {"labels": list(o.labels), "max_side": o.max_side}

    def infer(self, service, images, threshold, *, limits, quota, backend=None) -> Classifications:
        return classify(service, images, limits=limits, quota=quota, backend=backend)

    def compare(
        self, primary: Classifications, shadow: Classifications, service: ServiceConfig
    ) -> dict[str, Any]:
        """Per image: both variants' best labels and scores, and every label's score."""
        images = []
        for a, b in zip(primary.images, shadow.images, strict=True):
            (label_a, score_a), (label_b, score_b) = a.best(), b.best()
            images.append(
                {
                    "primary_label": label_a,
                    "primary_score": round(float(score_a), 6),
                    "shadow_label": label_b,
                    "shadow_score": round(float(score_b), 6),
                    "agree": label_a == label_b,
                    "primary_scores": _scores(a.labels, a.scores),
                    "shadow_scores": _scores(b.labels, b.scores),
                }
            )
        return {"images": images}

    def rows(self, result: Classifications, keys: Sequence[str | None]) -> list[Mapping[str, Any]]:
        return [
            tfserving_api.classification(c.labels, c.scores, key)
            for c, key in zip(result.images, keys, strict=True)
        ]


def _scores(labels: Sequence[str], scores: Sequence[float]) -> list[dict[str, Any]]:
    pairs = zip(labels, scores, strict=True)
    return [{"label": label, "score": round(float(s), 6)} for label, s in pairs]


KIND = Classification()
