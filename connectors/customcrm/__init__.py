"""Customcrm connector: contract models, the sandbox system, the HTTP client,
the change-feed poller and the bulk writer (see ``docs/contracts/customcrm-api.md``).

Entity names (``order``, ``product``, ``user``) map to REST resources
(``orders``, ``products``, ``users``) through :data:`RESOURCES`.
"""
from __future__ import annotations

#: entity (topic / command name) -> REST resource
RESOURCES: dict[str, str] = {"order": "orders", "product": "products", "user": "users"}
#: REST resource -> entity
ENTITIES: dict[str, str] = {v: k for k, v in RESOURCES.items()}


def resource_of(entity: str) -> str:
    """``order`` -> ``orders``; raises ``ValueError`` for an unknown entity."""
    try:
        return RESOURCES[entity]
    except KeyError:
        raise ValueError(f"unknown Customcrm entity {entity!r} (expected one of {sorted(RESOURCES)})") from None


def entity_of(resource: str) -> str:
    """``orders`` -> ``order``; raises ``ValueError`` for an unknown resource."""
    try:
        return ENTITIES[resource]
    except KeyError:
        raise ValueError(f"unknown Customcrm resource {resource!r} (expected one of {sorted(ENTITIES)})") from None
