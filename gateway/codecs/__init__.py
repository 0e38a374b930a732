"""Inbound wire formats: TF Serving / AutoML predict bodies as the gateway serves them, the
``:detect`` and ``:classify`` APIs."""
