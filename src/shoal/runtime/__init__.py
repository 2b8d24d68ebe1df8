"""Runtime drivers: how a node agent runs a pod's containers (see ``_protocol``)."""

from shoal.runtime._protocol import (
    ContainerConfig,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    Driver,
    Fingerprint,
    Mount,
    PortRequest,
    SecurityConfig,
)
from shoal.runtime.process import ExitHook, ProcessDriver

__all__ = [
    "ContainerConfig",
    "ContainerState",
    "ContainerStats",
    "ContainerStatus",
    "Driver",
    "ExitHook",
    "Fingerprint",
    "Mount",
    "PortRequest",
    "ProcessDriver",
    "SecurityConfig",
]
