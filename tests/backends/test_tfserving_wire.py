"""The strict reader of a classifier's answers: a model that answers garbage is a 502,
never a wrong label."""

from __future__ import annotations

import json

import pytest

from gateway.backends.tfserving_wire import backend_error_message, parse_classifications
from gateway.errors import BackendBadResponse


def body(doc) -> bytes:
    return json.dumps(doc).encode()


def test_rows_and_columns():
    rows = {"predictions": [{"scores": [0.2, 0.8], "labels": ["a", "b"], "key": "image-0"}]}
    (c,) = parse_classifications(body(rows), 1, ())
    assert (c.labels, c.scores) == (("a", "b"), (0.2, 0.8))
    cols = {"outputs": {"scores": [[0.1, 0.9], [0.6, 0.4]], "labels": [["x", "y"], ["x", "y"]]}}
    got = parse_classifications(body(cols), 2, ())
    assert [c.scores for c in got] == [(0.1, 0.9), (0.6, 0.4)]


def test_configured_labels_name_a_model_that_answers_scores_only():
    (c,) = parse_classifications(body({"predictions": [{"scores": [1, 0]}]}), 1, ("p", "q"))
    assert c.labels == ("p", "q")
    with pytest.raises(BackendBadResponse, match="without labels"):
        parse_classifications(body({"predictions": [{"scores": [1, 0]}]}), 1, ("p",))


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        body({"predictions": []}),
        body({"predictions": [{"scores": [0.5]}, {"scores": [0.5]}]}),
        body({"predictions": ["x"]}),
        body({"predictions": [{"scores": "high", "labels": ["a"]}]}),
        body({"predictions": [{"scores": [], "labels": []}]}),
        body({"predictions": [{"scores": [[0.5]], "labels": ["a"]}]}),
        body({"predictions": [{"scores": [0.5, 0.5], "labels": ["a"]}]}),
        body({"predictions": [{"scores": [0.5], "labels": [None]}]}),
        b'{"predictions": [{"scores": [NaN], "labels": ["a"]}]}',
        body({"outputs": {"labels": [["a"]]}}),
    ],
)
def test_garbage_is_a_bad_response(answer):
    with pytest.raises(BackendBadResponse):
        parse_classifications(answer, 1, ())


def test_error_text_of_a_refusal():
    assert backend_error_message(body({"error": "Servable  not\nfound"})) == "Servable not found"
    assert backend_error_message(b"<html>oops</html>") == "<html>oops</html>"
