"""Inbound wire formats: TF Serving / AutoML predict bodies as the gateway serves them, the
Open Inference Protocol (KServe V2), the ``:detect`` and ``:classify`` APIs."""
