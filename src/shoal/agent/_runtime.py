"""Choosing and building the agent's runtime: the driver, and for runc the image service.

``process`` needs nothing (host processes, any user). ``runc`` needs root, runc and
overlayfs (``runc_unavailable_reason`` says what is missing); it gets an ImageService under
``image_dir`` to pull images into, and stores its containers under ``data_dir/runc`` with
the logs beside the process driver's (``data_dir/logs``), so ``shoal logs`` works the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.agent._config import NETWORK_MODES, RUNTIMES, AgentConfig
from shoal.agent._images import ImagePuller
from shoal.agent._network import bridge_unavailable_reason
from shoal.errors import ConfigError
from shoal.runtime import Driver, ProcessDriver
from shoal.runtime.images import ImageService
from shoal.runtime.runc import RuncDriver, runc_unavailable_reason


def default_runtime() -> str:
    """The runtime ``shoal up``/``shoal agent`` use when none is asked for: runc where it
    works (Linux, root, runc, overlayfs), else the process runtime."""
    return "runc" if runc_unavailable_reason() is None else "process"


@dataclass
class Runtime:
    """A driver and, for drivers that run images, where images come from."""

    driver: Driver
    images: ImagePuller | None = None
    image_service: ImageService | None = None
    """The same object as ``images`` when the agent built it (and so must close it)."""


def network_mode(config: AgentConfig, driver: str) -> str:
    """The pod networking to use: "bridge" or "host". ``auto`` is bridge for runc pods where
    the data plane can run (root, the CNI plugins, nft), host otherwise. Raises ConfigError
    for bridge asked where it cannot work, saying why."""
    if config.network not in NETWORK_MODES:
        known = ", ".join(f'"{m}"' for m in NETWORK_MODES)
        raise ConfigError(f'unknown network mode "{config.network}": choose {known}')
    if config.network == "host":
        return "host"
    why = bridge_unavailable_reason()
    if driver != "runc":
        why = f'it needs the runc runtime (this agent runs "{driver}")'
    if why is None:
        return "bridge"
    if config.network == "bridge":
        raise ConfigError(f'network "bridge" cannot run here: {why}')
    return "host"


def build_runtime(config: AgentConfig) -> Runtime:
    """The driver (and image service) ``config.runtime`` names. Raises ConfigError for an
    unknown runtime, or for runc on a machine where it cannot work (saying why)."""
    if config.runtime == "process":
        return Runtime(
            ProcessDriver(
                config.data_dir / "containers",
                config.data_dir / "logs",
                log_max_bytes=config.log_max_bytes,
                host_ip=config.address,
            )
        )
    if config.runtime == "runc":
        reason = runc_unavailable_reason()
        if reason is not None:
            raise ConfigError(f'runtime "runc" cannot run here: {reason}')
        images = ImageService(
            config.resolved_image_dir,
            auth_file=config.auth_file,
            insecure_registries=config.insecure_registries,
        )
        driver = RuncDriver(
            config.data_dir / "runc",
            images=images,
            cgroup_parent=config.resolved_cgroup_parent,
            log_dir=config.data_dir / "logs",
            log_max_bytes=config.log_max_bytes,
            host_ip=config.address,
        )
        return Runtime(driver, images, images)
    known = ", ".join(f'"{r}"' for r in RUNTIMES)
    raise ConfigError(f'unknown runtime "{config.runtime}": this agent can run {known}')
