"""The kinds of service (base type ``service``), in one place: ``/services`` lists them all,
and a stack's services, links and discovery are of any of them."""

from __future__ import annotations

SERVICE_KINDS = ("service", "dnsService", "externalService", "loadBalancerService")
