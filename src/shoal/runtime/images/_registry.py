"""A registry v2 (distribution) client: manifests and blobs, with anonymous, Bearer and Basic
auth, on ``httpx.AsyncClient``.

Scheme: plain HTTP for loopback hosts and for hosts listed as insecure, HTTPS for the rest
(Docker's rule). Auth follows the distribution token spec: a request goes out with whatever
credential is cached for its scope; on ``401`` the ``WWW-Authenticate`` challenge says how to
get one (``Bearer``: ask the realm for a token for ``repository:<name>:pull``, with Basic
credentials from the auth file when there are some; ``Basic``: send those credentials), and
the request is retried once. Registry error bodies (``{"errors": [{"code", "message"}]}``)
and transport failures become :class:`ImagePullError` with the registry's own words.
"""

from __future__ import annotations

import errno
import hashlib
import json
from collections.abc import Callable, Collection

import httpx

from shoal.runtime.images._auth import AuthStore, Challenge, TokenCache, parse_www_authenticate
from shoal.runtime.images._blobs import BlobWriter, DigestMismatchError, SizeMismatchError
from shoal.runtime.images._errors import ImagePullError
from shoal.runtime.images._manifest import ACCEPT, MAX_MANIFEST_BYTES
from shoal.runtime.images._reference import Reference, is_loopback_host

MAX_CONFIG_BYTES = 16 << 20


def registry_error_text(body: bytes) -> str:
    """``"manifest unknown: manifest unknown"`` from a distribution error body, or ""."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = []
    for err in errors:
        if not isinstance(err, dict):
            continue
        code = str(err.get("code", "")).lower().replace("_", " ")
        message = str(err.get("message", "")) or code
        text = f"{code}: {message}" if code else message
        detail = err.get("detail")
        if isinstance(detail, str) and detail and detail not in text:
            text += f" ({detail})"
        parts.append(text)
    return "; ".join(parts)


def _transport_reason(exc: BaseException) -> str:
    """The most specific cause of a transport failure (``connection refused``, not
    ``All connection attempts failed``)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            if seen.errno == errno.ECONNREFUSED:
                return "connection refused"
            return seen.strerror.lower() if seen.strerror else str(seen)
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    text = str(exc) or type(exc).__name__
    return "connection refused" if "refused" in text.lower() else text


async def _read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds ``limit`` bytes."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class RegistryClient:
    """Talks to any number of registries through one ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        auth: AuthStore,
        *,
        insecure_registries: Collection[str] = (),
    ) -> None:
        self._http = http
        self._auth = auth
        self._tokens = TokenCache()
        self._insecure = {h.lower() for h in insecure_registries}
        self._challenges: dict[str, Challenge] = {}
        self.requests = 0
        """HTTP requests sent to registries and token servers (for tests and benchmarks)."""

    def base_url(self, ref: Reference) -> str:
        host = ref.api_host
        plain = is_loopback_host(host) or host in self._insecure or ref.registry in self._insecure
        return f"{'http' if plain else 'https'}://{host}/v2/{ref.repository}"

    # -- auth -------------------------------------------------------------------------------

    def _scope(self, ref: Reference) -> str:
        return f"repository:{ref.repository}:pull"

    def _auth_header(self, ref: Reference) -> str | None:
        challenge = self._challenges.get(ref.registry)
        if challenge is None:
            return None
        if challenge.scheme == "bearer":
            token = self._tokens.get(ref.registry, self._scope(ref))
            return f"Bearer {token}" if token else None
        creds = self._auth.lookup(ref.registry)
        return creds.basic_header() if creds else None

    async def _authorize(self, ref: Reference, response: httpx.Response) -> None:
        """Act on a 401's challenge, so that a retry carries a credential; raise if we can't."""
        challenges = parse_www_authenticate(response.headers.get("www-authenticate", ""))
        usable = [c for c in challenges if c.scheme in ("bearer", "basic")]
        if not usable:
            raise self._status_error(ref, response, await response.aread(), "no usable challenge")
        challenge = next((c for c in usable if c.scheme == "bearer"), usable[0])
        self._challenges[ref.registry] = challenge
        if challenge.scheme == "basic":
            if self._auth.lookup(ref.registry) is None:
                where = self._auth.path or "no auth file found"
                raise ImagePullError(
                    f"pulling {ref}: {ref.registry} requires authentication (Basic realm="
                    f"{challenge.params.get('realm', '')!r}) and there are no credentials for it "
                    f"in the auth file ({where})",
                    reference=str(ref),
                    status=401,
                )
            return
        await self._fetch_token(ref, challenge)

    async def _fetch_token(self, ref: Reference, challenge: Challenge) -> None:
        realm = challenge.params.get("realm")
        if not realm:
            raise ImagePullError(
                f"pulling {ref}: {ref.registry} sent a Bearer challenge without a realm",
                reference=str(ref),
            )
        params = {"scope": self._scope(ref)}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        headers = {}
        creds = self._auth.lookup(ref.registry)
        if creds is not None:
            headers["Authorization"] = creds.basic_header()
        try:
            self.requests += 1
            response = await self._http.get(realm, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise ImagePullError(
                f"pulling {ref}: cannot reach token server {realm}: {_transport_reason(exc)}",
                reference=str(ref),
            ) from exc
        if response.status_code != 200:
            text = registry_error_text(response.content) or response.text[:200].strip()
            hint = "" if creds else f" (no credentials for {ref.registry} in the auth file)"
            raise ImagePullError(
                f"pulling {ref}: token server {realm} answered {response.status_code}: "
                f"{text}{hint}",
                reference=str(ref),
                status=response.status_code,
            )
        try:
            doc = response.json()
            token = doc.get("token") or doc.get("access_token")
            expires_in = float(doc.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError) as exc:
            raise ImagePullError(
                f"pulling {ref}: token server {realm} sent an unreadable answer: {exc}",
                reference=str(ref),
            ) from exc
        if not isinstance(token, str) or not token:
            raise ImagePullError(
                f"pulling {ref}: token server {realm} sent no token", reference=str(ref)
            )
        self._tokens.put(ref.registry, self._scope(ref), token, expires_in)

    # -- requests ---------------------------------------------------------------------------

    def _status_error(
        self, ref: Reference, response: httpx.Response, body: bytes, note: str = ""
    ) -> ImagePullError:
        text = registry_error_text(body) or body[:200].decode(errors="replace").strip()
        text = text or response.reason_phrase
        if response.status_code == 401 and self._auth.lookup(ref.registry) is not None:
            note = note or f"the credentials for {ref.registry} were rejected"
        suffix = f" ({note})" if note else ""
        return ImagePullError(
            f"pulling {ref}: {ref.api_host} answered {response.status_code}: {text}{suffix}",
            reference=str(ref),
            status=response.status_code,
        )

    async def _send(
        self, ref: Reference, method: str, url: str, headers: dict[str, str]
    ) -> httpx.Response:
        """Send with auth (one retry after a challenge); return a streaming 2xx response."""
        for attempt in range(2):
            sent = dict(headers)
            auth = self._auth_header(ref)
            if auth:
                sent["Authorization"] = auth
            request = self._http.build_request(method, url, headers=sent)
            try:
                self.requests += 1
                response = await self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                raise ImagePullError(
                    f"pulling {ref}: cannot reach registry {ref.api_host}: "
                    f"{_transport_reason(exc)}",
                    reference=str(ref),
                ) from exc
            if response.status_code == 401 and attempt == 0:
                try:
                    await self._authorize(ref, response)
                finally:
                    await response.aclose()
                continue
            if response.status_code >= 400:
                try:
                    body = await response.aread() if method != "HEAD" else b""
                finally:
                    await response.aclose()
                raise self._status_error(ref, response, body)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def head_manifest(self, ref: Reference, target: str) -> str | None:
        """The digest the registry reports for ``target`` (a tag), or None if it does not say."""
        url = f"{self.base_url(ref)}/manifests/{target}"
        response = await self._send(ref, "HEAD", url, {"Accept": ACCEPT})
        await response.aclose()
        digest = response.headers.get("docker-content-digest")
        return digest if digest and digest.startswith("sha256:") else None

    async def get_manifest(
        self, ref: Reference, target: str, expected_size: int | None = None
    ) -> tuple[bytes, str, str]:
        """``(body, media type, digest)`` of a manifest or index, its digest verified.

        ``target`` is a tag or a digest. The digest of the body must equal ``target`` when
        that is a digest, and the ``Docker-Content-Digest`` the registry reports, if any.
        """
        url = f"{self.base_url(ref)}/manifests/{target}"
        response = await self._send(ref, "GET", url, {"Accept": ACCEPT})
        try:
            body = await _read_capped(response, MAX_MANIFEST_BYTES)
        finally:
            await response.aclose()
        if body is None:
            raise ImagePullError(
                f"pulling {ref}: manifest {target} is larger than {MAX_MANIFEST_BYTES} bytes; "
                "refusing it",
                reference=str(ref),
            )
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        claimed = response.headers.get("docker-content-digest")
        for expected, source in ((target, "requested"), (claimed, "reported by the registry")):
            if expected and expected.startswith("sha256:") and expected != digest:
                raise DigestMismatchError(
                    f"pulling {ref}: manifest digest mismatch: {source} {expected}, "
                    f"content is {digest}",
                    expected=expected,
                    actual=digest,
                )
        if expected_size is not None and len(body) != expected_size:
            raise SizeMismatchError(
                f"pulling {ref}: manifest {digest}: expected {expected_size} bytes, "
                f"got {len(body)}",
                expected=str(expected_size),
                actual=str(len(body)),
            )
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        return body, media_type, digest

    async def get_blob_bytes(self, ref: Reference, digest: str, size: int) -> bytes:
        """A small blob (an image config) in memory; the caller verifies it."""
        if size > MAX_CONFIG_BYTES:
            raise ImagePullError(
                f"pulling {ref}: config {digest} is {size} bytes, over {MAX_CONFIG_BYTES}",
                reference=str(ref),
            )
        response = await self._send(ref, "GET", f"{self.base_url(ref)}/blobs/{digest}", {})
        try:
            body = await _read_capped(response, size)
        finally:
            await response.aclose()
        if body is None:
            raise SizeMismatchError(
                f"pulling {ref}: blob {digest}: expected {size} bytes, got more than that",
                expected=str(size),
                actual=f">{size}",
            )
        return body

    async def fetch_blob(
        self,
        ref: Reference,
        writer: BlobWriter,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Stream the blob ``writer.digest`` into ``writer`` (which checks size as it goes and
        digest at commit); ``on_progress`` gets the byte count so far after each chunk."""
        response = await self._send(ref, "GET", f"{self.base_url(ref)}/blobs/{writer.digest}", {})
        try:
            async for chunk in response.aiter_bytes():
                writer.write(chunk)
                if on_progress is not None:
                    on_progress(writer.written)
        except httpx.TransportError as exc:
            raise ImagePullError(
                f"pulling {ref}: downloading {writer.digest} from {ref.api_host} failed: "
                f"{_transport_reason(exc)}",
                reference=str(ref),
            ) from exc
        finally:
            await response.aclose()
