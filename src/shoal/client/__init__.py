"""The client SDK: typed CRUD, watches and informers over the API server's HTTP API."""

from shoal.client._client import DEFAULT_SERVER, Client, ResourceClient, server_url
from shoal.client._informer import Informer

__all__ = ["DEFAULT_SERVER", "Client", "Informer", "ResourceClient", "server_url"]
