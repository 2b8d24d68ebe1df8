"""The API server: Kubernetes-style REST over a Store. The only component that touches it."""

from shoal.apiserver._app import APIServer, build_app, parse_path
from shoal.apiserver._registry import Registry, make_predicate
from shoal.apiserver._serve import DEFAULT_PORT, serve_api, serve_data_dir

__all__ = [
    "DEFAULT_PORT",
    "APIServer",
    "Registry",
    "build_app",
    "make_predicate",
    "parse_path",
    "serve_api",
    "serve_data_dir",
]
