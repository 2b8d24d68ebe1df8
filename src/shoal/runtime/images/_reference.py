"""Image references, parsed and normalised the way Docker does.

``busybox`` means ``docker.io/library/busybox:latest``: a first path component is a registry
host only when it contains a ``.`` or a ``:`` or is ``localhost``; Docker Hub's single-component
names live under ``library/``; the tag defaults to ``latest`` unless a digest pins the image.
Every reference the store records is in this normalised form, so ``busybox`` and
``docker.io/library/busybox:latest`` name the same tag.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from shoal.runtime.images._errors import InvalidReferenceError

DEFAULT_REGISTRY = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST_LABEL_RE = re.compile(r"^(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])$")
_NAME_MAX = 255


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised reference: ``registry/repository[:tag][@digest]``."""

    registry: str
    """``host[:port]``; ``docker.io`` for Docker Hub."""
    repository: str
    """Path within the registry, e.g. ``library/busybox``."""
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def tagged(self) -> str | None:
        """``registry/repository:tag``, the form a tag is stored under; None when untagged."""
        return f"{self.name}:{self.tag}" if self.tag is not None else None

    @property
    def api_host(self) -> str:
        """The host[:port] to talk to (Docker Hub's API is not served at ``docker.io``)."""
        return DOCKER_HUB_API_HOST if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def manifest_ref(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def _invalid(ref: str, why: str) -> InvalidReferenceError:
    return InvalidReferenceError(f"invalid image reference {ref!r}: {why}")


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def _check_host(ref: str, host: str) -> str:
    """Validate ``host[:port]`` (or ``[v6]:port``) and return it lowercased, Hub aliases folded."""
    has_port = False
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise _invalid(ref, f"registry host {host!r} has an unclosed '['")
        address, rest = host[1:end], host[end + 1 :]
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise _invalid(ref, f"registry host {host!r} is not a valid IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise _invalid(ref, f"registry host {host!r} has junk after ']'")
        has_port, port = bool(rest), rest[1:]
    else:
        name, has_colon, port = host.partition(":")
        has_port = bool(has_colon)
        if not all(_HOST_LABEL_RE.match(label) for label in name.split(".")):
            raise _invalid(ref, f"registry host {name!r} is not a valid hostname")
    if has_port and not (port.isdigit() and 0 < int(port) < 65536):
        raise _invalid(ref, f"registry port {port!r} must be a number from 1 to 65535")
    lowered = host.lower()
    return DEFAULT_REGISTRY if lowered in _HUB_ALIASES else lowered


def parse_reference(ref: str) -> Reference:
    """Parse and normalise ``ref``; raise :class:`InvalidReferenceError` naming what is wrong."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidReferenceError(f"invalid image reference {ref!r}: it is empty")
    if ref != ref.strip() or any(c.isspace() for c in ref):
        raise _invalid(ref, "it contains whitespace")
    rest, digest = ref, None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if not _DIGEST_RE.match(digest):
            raise _invalid(ref, f"digest {digest!r} must be 'sha256:' and 64 lowercase hex digits")
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise _invalid(
                ref, f"tag {tag!r} must be 1-128 of [A-Za-z0-9_.-], not starting with . or -"
            )
    if not rest:
        raise _invalid(ref, "the repository name is empty")
    first, sep, remainder = rest.partition("/")
    if sep and _looks_like_host(first):
        registry, path = _check_host(ref, first), remainder
    elif sep and first.lower() in _HUB_ALIASES:
        registry, path = DEFAULT_REGISTRY, remainder
    else:
        registry, path = DEFAULT_REGISTRY, rest
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    for component in path.split("/"):
        if not component:
            raise _invalid(ref, "the repository has an empty path component")
        if component.lower() != component and _COMPONENT_RE.match(component.lower()):
            raise _invalid(ref, f"repository name component {component!r} must be lowercase")
        if not _COMPONENT_RE.match(component):
            raise _invalid(
                ref,
                f"repository name component {component!r} may only hold [a-z0-9] separated by "
                "'.', '_', '__' or '-'",
            )
    if len(f"{registry}/{path}") > _NAME_MAX:
        raise _invalid(ref, f"the name is longer than {_NAME_MAX} characters")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)


def normalize_reference(ref: str) -> str:
    """``"busybox"`` -> ``"docker.io/library/busybox:latest"``; raise on an invalid reference."""
    return str(parse_reference(ref))


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1, with or without a port (``[::1]:5000``)."""
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
