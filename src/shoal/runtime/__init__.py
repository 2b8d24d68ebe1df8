"""Runtime drivers: how a node agent runs a pod's containers (see ``_protocol``)."""

from shoal.runtime._protocol import (
    ContainerConfig,
    ContainerState,
    ContainerStatus,
    Driver,
    Fingerprint,
    PortRequest,
)
from shoal.runtime.process import ExitHook, ProcessDriver

__all__ = [
    "ContainerConfig",
    "ContainerState",
    "ContainerStatus",
    "Driver",
    "ExitHook",
    "Fingerprint",
    "PortRequest",
    "ProcessDriver",
]
