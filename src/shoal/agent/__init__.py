"""The node agent (shoal's kubelet): registers its Node and heartbeats it, runs the pods
bound to the node through a runtime driver, probes them, reports their status, serves their
logs, and adopts running containers after a restart.

Layering: imports ``client``, ``runtime`` and ``api``; never ``store`` or ``apiserver``.
"""

from shoal.agent._agent import Agent
from shoal.agent._config import AgentConfig
from shoal.agent._runtime import default_runtime

__all__ = ["Agent", "AgentConfig", "default_runtime"]
