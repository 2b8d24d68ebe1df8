"""shoal: container orchestration with its own service registry, discovery and networking.

Everyday API: the resource model (``shoal.api``), the HTTP client (``shoal.client``).
Extension API: scheduler plugins (``shoal.scheduler``), runtime drivers (``shoal.runtime``).
Testing API: ``shoal.testing``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
