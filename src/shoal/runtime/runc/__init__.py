"""The runc runtime driver: real Linux containers (namespaces, cgroups, OCI image roots).

``RuncDriver`` satisfies ``shoal.runtime.Driver``; ``runc_unavailable_reason()`` tells an
agent whether it can be used on this machine (Linux, root, runc, overlayfs).
"""

from shoal.runtime.runc._driver import ExitHook, RuncDriver
from shoal.runtime.runc._runc import runc_unavailable_reason

__all__ = ["ExitHook", "RuncDriver", "runc_unavailable_reason"]
