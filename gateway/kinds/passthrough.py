"""Passthrough: any model, the body forwarded unchanged and the answer returned unchanged.

Served only on the inbound route of its backend's own protocol (TF Serving's ``:predict``
for a TF Serving model, ``infer`` for an Open Inference Protocol model): the body is the
model's, so only a client of that protocol can write it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway import backends
from gateway.config import ServiceConfig
from gateway.kinds.base import Kind
from gateway.schema import STRING, Fields, ListOf, Setting


@dataclass(frozen=True)
class PassthroughOptions:
    labels: tuple[str, ...]  # for clients only: the gateway reads no answer


class Passthrough(Kind):
    name = "passthrough"
    description = "forwards a body to the model unchanged and returns its answer"
    fields = Fields({"labels": Setting(ListOf(STRING), [])})
    role = "forwarder"
    forwards = True

    def options(self, values: dict[str, Any], where: str) -> PassthroughOptions:
        return PassthroughOptions(tuple(values["labels"]))

    def serves(self, route: str, service: ServiceConfig) -> bool:
        return route == backends.protocol(service.backend.protocol).passthrough_route

    def public(self, service: ServiceConfig) -> dict[str, Any]:
        return {"labels": list(service.options.labels)}


KIND = Passthrough()
