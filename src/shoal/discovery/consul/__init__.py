"""The Consul-compatible HTTP API over the registry."""

from shoal.discovery.consul._agent import ConsulAgent
from shoal.discovery.consul._app import ConsulAPI
from shoal.discovery.consul._kv import KVStore

__all__ = ["ConsulAPI", "ConsulAgent", "KVStore"]
