"""Registry credentials and challenges: the auth file, ``WWW-Authenticate``, cached tokens.

The auth file is Docker's ``config.json`` format, so an existing ``docker login`` works::

    {"auths": {"registry.example.com:5000": {"auth": "<base64 of user:password>"}}}

(``"username"``/``"password"`` keys are accepted too). Without an explicit path it is looked up
at ``$SHOAL_AUTH_FILE``, then ``~/.config/shoal/auth.json``, then ``~/.docker/config.json``.
Credential helpers (``credsStore``) and identity tokens are not supported; such entries are
ignored rather than guessed at.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from shoal.runtime.images._blobs import ImageError
from shoal.runtime.images._reference import DEFAULT_REGISTRY

_HUB_KEYS = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:  # never print a password in a traceback or log
        return f"Credentials(username={self.username!r}, password='***')"


def default_auth_file() -> Path | None:
    """The first auth file that exists among the documented locations, or None."""
    env = os.environ.get("SHOAL_AUTH_FILE")
    if env:
        return Path(env)
    home = Path.home()
    for candidate in (home / ".config" / "shoal" / "auth.json", home / ".docker" / "config.json"):
        if candidate.is_file():
            return candidate
    return None


def _host_key(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``Host:5000`` -> ``host:5000``."""
    host = key.strip()
    for scheme in ("https://", "http://"):
        if host.lower().startswith(scheme):
            host = host[len(scheme) :]
    host = host.split("/", 1)[0].lower()
    return DEFAULT_REGISTRY if host in _HUB_KEYS else host


def parse_auth_file(data: str, source: str) -> dict[str, Credentials]:
    """Credentials by registry host from the text of an auth file; errors name ``source``."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ImageError(f"auth file {source}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ImageError(f"auth file {source}: must be a JSON object with an 'auths' key")
    auths = doc.get("auths", {})
    if not isinstance(auths, dict):
        raise ImageError(f"auth file {source}: field 'auths' must be an object")
    found: dict[str, Credentials] = {}
    for key, entry in auths.items():
        where = f"auth file {source}: auths[{key!r}]"
        if not isinstance(entry, dict):
            raise ImageError(f"{where} must be an object")
        creds = _entry_credentials(entry, where)
        if creds is not None:
            found[_host_key(key)] = creds
    return found


def _entry_credentials(entry: dict[str, object], where: str) -> Credentials | None:
    auth = entry.get("auth")
    if auth:
        if not isinstance(auth, str):
            raise ImageError(f"{where}.auth must be a string")
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ImageError(f"{where}.auth is not base64 of 'user:password'") from exc
        name, sep, secret = decoded.partition(":")
        if not sep or not name:
            raise ImageError(f"{where}.auth must decode to 'user:password'")
        return Credentials(name, secret)
    user, password = entry.get("username"), entry.get("password")
    if user is None and password is None:
        return None  # identity token or helper-only entry: nothing we can use
    if not isinstance(user, str) or not user or not isinstance(password, str):
        raise ImageError(f"{where} needs both 'username' and 'password' as strings")
    return Credentials(user, password)


class AuthStore:
    """Credentials from one auth file, re-read when the file changes (a later login counts)."""

    def __init__(self, path: Path | None, *, explicit: bool) -> None:
        self.path = path
        self._explicit = explicit
        self._stamp: tuple[int, int] | None = None
        self._creds: dict[str, Credentials] = {}

    @classmethod
    def open(cls, path: Path | None) -> AuthStore:
        if path is not None:
            return cls(Path(path), explicit=True)
        return cls(default_auth_file(), explicit=False)

    def lookup(self, registry: str) -> Credentials | None:
        """Credentials for ``registry`` (normalised ``host[:port]``), if the file has any."""
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self._explicit:
                raise ImageError(f"auth file {self.path} does not exist") from None
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._creds = parse_auth_file(self.path.read_text(), str(self.path))
            self._stamp = stamp
        return self._creds.get(_host_key(registry))


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: scheme (lowercased) and its parameters."""

    scheme: str
    params: dict[str, str]


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse RFC 7235 challenges, e.g. ``Bearer realm="...",service="...",scope="..."``.

    Handles quoted strings with escapes and commas inside quotes (scopes hold commas:
    ``repository:x:pull,push``), and several challenges in one header.
    """
    challenges: list[Challenge] = []
    i, n = 0, len(header)

    def skip(chars: str) -> None:
        nonlocal i
        while i < n and header[i] in chars:
            i += 1

    def token() -> str:
        nonlocal i
        start = i
        while i < n and header[i] not in ' \t,="':
            i += 1
        return header[start:i]

    while i < n:
        skip(" \t,")
        scheme = token()
        if not scheme:
            break
        params: dict[str, str] = {}
        while True:
            save = i
            skip(" \t,")
            key = token()
            skip(" \t")
            if not key or i >= n or header[i] != "=":
                i = save  # not a parameter: the next challenge's scheme (or the end)
                break
            i += 1
            skip(" \t")
            if i < n and header[i] == '"':
                i += 1
                chars: list[str] = []
                while i < n and header[i] != '"':
                    if header[i] == "\\" and i + 1 < n:
                        i += 1
                    chars.append(header[i])
                    i += 1
                i += 1
                value = "".join(chars)
            else:
                value = token()
            params[key.lower()] = value
        challenges.append(Challenge(scheme.lower(), params))
    return challenges


class TokenCache:
    """Bearer tokens per (registry, scope) until shortly before they expire."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    def get(self, registry: str, scope: str) -> str | None:
        entry = self._tokens.get((registry, scope))
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def put(self, registry: str, scope: str, token: str, expires_in: float) -> None:
        # Renew a little early so a token does not expire between check and use.
        lifetime = max(expires_in - 10.0, expires_in / 2)
        self._tokens[(registry, scope)] = (token, time.monotonic() + lifetime)

    def drop(self, registry: str, scope: str) -> None:
        self._tokens.pop((registry, scope), None)
