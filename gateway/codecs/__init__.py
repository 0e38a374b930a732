"""Wire formats: TF Serving / AutoML predict bodies, the ``:detect`` API, JSON and base64."""
