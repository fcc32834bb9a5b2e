"""What a service module gets when it registers on the control-plane server (kept apart from
``control_plane.server`` so that service modules and the server can import each other's names without
a cycle)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from clients.server_handlers import HandlerRegistry
from control_plane.features.registry import FeatureRegistry
from control_plane.settings import ControlPlaneSettings


@dataclass
class ServiceContext:
    """What a service module gets to register itself on the control-plane server: the settings, the
    metadata database and the feature registry core. ``on_close`` collects callbacks run at stop; one
    that returns an awaitable (a background loop's ``stop``) is awaited, so that the loop has ended, and
    closed its clients, before the server's event loop can. ``on_stop`` collects callbacks run first, while
    calls are still served: each asks its in-flight work to end at once and returns what waits for it
    to have answered its callers (``ingestion.draining``), awaited before any ``on_close``."""

    settings: ControlPlaneSettings
    engine: Engine
    sessions: sessionmaker[Session]
    registry: FeatureRegistry
    on_close: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: ``HOST:PORT`` the server is bound to, set once it listens (with port 0 the real port is only known
    #: then); jobs are told this address.
    address: str | None = None


#: Adds one gRPC service to the server and returns its full service name (for health and reflection).
ServiceModule = Callable[[HandlerRegistry, ServiceContext], str]
