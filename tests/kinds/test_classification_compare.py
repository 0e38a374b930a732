"""What a classifier's two variants are compared on: best labels, scores, agreement."""

from __future__ import annotations

from gateway.catalog import parse_config
from gateway.kinds import get as kind_of
from gateway.pipeline.images import ImageInfo
from gateway.usecases.classification import Classifications, ClassifiedImage


def result(*scores: tuple[float, float]) -> Classifications:
    info = ImageInfo.__new__(ImageInfo)
    images = [ClassifiedImage(info, ("none", "eos"), s) for s in scores]
    return Classifications(images, "cls", "1")


def test_labels_scores_and_agreement():
    raw = {"services": {"cls": {"kind": "classification", "backend": {"url": "http://m:1"}}}}
    cfg = parse_config(raw).services["cls"]
    found = kind_of("classification").compare(
        result((0.2, 0.8), (0.9, 0.1)), result((0.3, 0.7), (0.4, 0.6)), cfg
    )
    first, second = found["images"]
    assert (first["primary_label"], first["shadow_label"], first["agree"]) == ("eos", "eos", True)
    assert (second["primary_label"], second["shadow_label"]) == ("none", "eos")
    assert second["agree"] is False
    assert second["shadow_scores"] == [
        {"label": "none", "score": 0.4},
        {"label": "eos", "score": 0.6},
    ]
