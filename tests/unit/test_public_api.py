"""The public names users import from shoal's everyday packages are pinned here: removing or
renaming one is a deliberate, visible change."""

import importlib

import pytest

PUBLIC = {
    "shoal.client": {"Client", "DEFAULT_SERVER", "Informer", "ResourceClient", "server_url"},
    "shoal.store": {"JSONObject", "ListResult", "SQLiteStore", "Store", "WatchEvent", "open_store"},
    "shoal.testing": {"FakeClock", "RunningAPIServer", "free_port", "running_api_server"},
    "shoal.apiserver": {"APIServer", "DEFAULT_PORT", "Registry", "build_app", "make_predicate",
                        "parse_path", "serve_api", "serve_data_dir"},
}  # fmt: skip

API_MUST_HAVE = {
    "Pod", "Node", "Service", "Endpoints", "Namespace", "Event", "Deployment", "ReplicaSet",
    "Scale", "Binding", "ObjectMeta", "Selector", "KINDS", "resolve_kind", "validate_object",
    "cpu_millis", "memory_bytes", "parse_quantity",
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_all_is_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == PUBLIC[module]
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name} is in __all__ but missing"


def test_api_exports() -> None:
    api = importlib.import_module("shoal.api")
    assert set(api.__all__) >= API_MUST_HAVE
    for name in api.__all__:
        assert hasattr(api, name)
