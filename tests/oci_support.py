"""Real OCI images and registries for tests: umoci builds, docker-registry serves, skopeo pushes.

Everything here runs the real tools (no fakes): ``build_busybox_image`` makes an OCI layout with
umoci from busybox-static's ``/bin/busybox``; ``registry`` runs Debian's ``docker-registry``
with its own config and storage on a free loopback port (anonymous, htpasswd or token auth);
``token_server`` issues the JWTs a token-auth registry trusts; ``push`` copies a layout to a
registry with skopeo. Every process is stopped by its PID when the ``with`` block ends, even
when the test fails. Callers check root and the tools with ``tests.rootreq.require_root``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import bcrypt
import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from shoal.testing import free_port

BUSYBOX = Path("/bin/busybox")
TOOLS = ("umoci", "skopeo", "docker-registry", "busybox")


def run(*args: str | Path, timeout: float = 120) -> str:
    """Run a tool; on failure raise with its stderr so the test says what went wrong."""
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


# -- building images ----------------------------------------------------------------------------


def build_busybox_image(
    workdir: Path,
    layers: int = 1,
    tag: str = "latest",
    *,
    base: str | None = None,
    layout: Path | None = None,
    cmd: tuple[str, ...] = ("/bin/sh",),
    layer_bytes: int = 0,
) -> Path:
    """Build ``layout:tag`` with umoci and return the layout directory.

    Without ``base`` the first layer holds ``/bin/busybox`` (from busybox-static) and a few
    applet links; each further layer adds ``/layers/<tag>-<n>.txt`` (plus ``layer_bytes`` of
    random, incompressible data when asked, for benchmarks). With ``base`` (a tag already in
    the layout) the image starts from that one, so the two share its layers: ``layers`` then
    counts only the new ones. The config gets ``cmd``, an env var and a label naming the tag.
    """
    layout = layout or workdir / "layout"
    bundle = workdir / f"bundle-{tag}-{uuid.uuid4().hex[:8]}"
    if not (layout / "oci-layout").exists():
        run("umoci", "init", "--layout", layout)
    added = 0
    if base is None:
        run("umoci", "new", "--image", f"{layout}:{tag}")
        run("umoci", "unpack", "--image", f"{layout}:{tag}", bundle)
        rootfs = bundle / "rootfs"
        (rootfs / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        for applet in ("sh", "ls", "cat", "echo", "sleep", "true"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        (rootfs / "etc").mkdir(exist_ok=True)
        (rootfs / "etc" / "hostname").write_text("busybox\n")
        run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:{tag}", bundle)
        added = 1
    else:
        run("umoci", "tag", "--image", f"{layout}:{base}", tag)
        run("umoci", "unpack", "--image", f"{layout}:{tag}", bundle)
    try:
        for n in range(added, layers):
            extra = bundle / "rootfs" / "layers"
            extra.mkdir(exist_ok=True)
            (extra / f"{tag}-{n}.txt").write_text(f"layer {n} of {tag}\n")
            if layer_bytes:
                (extra / f"{tag}-{n}.bin").write_bytes(os.urandom(layer_bytes))
            run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:{tag}", bundle)
        run(
            "umoci", "config", "--image", f"{layout}:{tag}",
            *(f"--config.cmd={c}" for c in cmd),
            "--config.env=SHOAL_TEST=1", f"--config.label=shoal.test.tag={tag}",
            "--config.workingdir=/", "--architecture=amd64", "--os=linux",
        )  # fmt: skip
    finally:
        shutil.rmtree(bundle, ignore_errors=True)
    return layout


# -- writing layout blobs by hand (for hostile layers and indexes) --------------------------------


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = _sha(data)
    path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    path.write_bytes(data)
    return digest, len(data)


def read_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def index_entry(layout: Path, tag: str) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return dict(entry)
    raise KeyError(f"tag {tag!r} not in {layout}")


def set_tag(layout: Path, tag: str, descriptor: dict[str, Any]) -> None:
    """Point ``tag`` in the layout's index.json at ``descriptor``."""
    index = json.loads((layout / "index.json").read_text())
    index["manifests"] = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
    ]
    index["manifests"].append(
        {**descriptor, "annotations": {"org.opencontainers.image.ref.name": tag}}
    )
    (layout / "index.json").write_text(json.dumps(index))


def tar_layer(entries: list[tuple[str, str, bytes | str]]) -> bytes:
    """A gzipped layer from (name, kind, data-or-linkname) with kind file, dir or sym."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, kind, extra in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            data = extra if isinstance(extra, bytes) else extra.encode()
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(extra)
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def add_layer(layout: Path, base: str, tag: str, layer: bytes) -> None:
    """Tag ``tag`` as ``base`` plus one more (gzipped) layer, written by hand."""
    entry = index_entry(layout, base)
    manifest = json.loads(read_blob(layout, entry["digest"]))
    config = json.loads(read_blob(layout, manifest["config"]["digest"]))
    config["rootfs"]["diff_ids"].append(_sha(gzip.decompress(layer)))
    config_digest, config_size = put_blob(layout, json.dumps(config).encode())
    layer_digest, layer_size = put_blob(layout, layer)
    manifest["config"] = {**manifest["config"], "digest": config_digest, "size": config_size}
    manifest["layers"].append(
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer_size,
        }
    )
    digest, size = put_blob(layout, json.dumps(manifest).encode())
    set_tag(layout, tag, {"mediaType": entry["mediaType"], "digest": digest, "size": size})


def make_index(layout: Path, tag: str, platforms: dict[str, str]) -> str:
    """Tag ``tag`` as an OCI index of existing tags: ``{"linux/arm64": "tag-a", ...}``.
    Each entry's config is rewritten to claim its platform. Returns the index digest."""
    manifests = []
    for plat, source in platforms.items():
        os_name, arch, *variant = plat.split("/")
        entry = index_entry(layout, source)
        manifest = json.loads(read_blob(layout, entry["digest"]))
        config = json.loads(read_blob(layout, manifest["config"]["digest"]))
        config["architecture"], config["os"] = arch, os_name
        config.setdefault("config", {}).setdefault("Labels", {})["shoal.test.platform"] = plat
        digest, size = put_blob(layout, json.dumps(config).encode())
        manifest["config"] = {**manifest["config"], "digest": digest, "size": size}
        m_digest, m_size = put_blob(layout, json.dumps(manifest).encode())
        platform = {"os": os_name, "architecture": arch}
        if variant:
            platform["variant"] = variant[0]
        manifests.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": m_digest,
                "size": m_size,
                "platform": platform,
            }
        )
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }
    digest, size = put_blob(layout, json.dumps(index).encode())
    set_tag(
        layout,
        tag,
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": size},
    )
    return digest


# -- token server -----------------------------------------------------------------------------------


@dataclass
class TokenServer:
    """A distribution token server: issues RS256 JWTs with an ``x5c`` self-signed cert."""

    realm: str
    service: str
    issuer: str
    cert_path: Path
    credentials: tuple[str, str] | None
    requests: list[dict[str, str]] = field(default_factory=list)
    """One entry per token request: scope, user ("" if anonymous), status."""


def _self_signed(workdir: Path) -> tuple[rsa.RSAPrivateKey, bytes, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shoal-test-token-issuer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = workdir / "token-cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert.public_bytes(serialization.Encoding.DER), path


@contextlib.contextmanager
def token_server(workdir: Path, credentials: tuple[str, str] | None) -> Iterator[TokenServer]:
    """Run a token server on 127.0.0.1 (in a thread). With ``credentials``, requests must carry
    them as Basic auth; every granted token allows pull and push on the requested repository."""
    workdir.mkdir(parents=True, exist_ok=True)
    key, cert_der, cert_path = _self_signed(workdir)
    port = free_port()
    info = TokenServer(
        realm=f"http://127.0.0.1:{port}/token",
        service=f"shoal-test-{uuid.uuid4().hex[:8]}",
        issuer="shoal-test-issuer",
        cert_path=cert_path,
        credentials=credentials,
    )

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            scope = query.get("scope", [""])[0]
            user = ""
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if credentials is not None and (user, password) != credentials:
                    return self._answer(401, {"errors": [{"code": "UNAUTHORIZED",
                                                          "message": "bad credentials"}]},
                                        scope, user)  # fmt: skip
            if credentials is not None and not user:
                return self._answer(
                    401,
                    {"errors": [{"code": "UNAUTHORIZED", "message": "credentials required"}]},
                    scope,
                    user,
                )
            access = []
            for item in query.get("scope", []):
                kind, _, rest = item.partition(":")
                name = rest.rpartition(":")[0]  # grant pull and push whatever was asked
                access.append({"type": kind, "name": name, "actions": ["pull", "push"]})
            now = int(time.time())
            claims = {
                "iss": info.issuer, "sub": user, "aud": info.service, "exp": now + 300,
                "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access,
            }  # fmt: skip
            token = jwt.encode(
                claims,
                key,
                algorithm="RS256",
                headers={"x5c": [base64.b64encode(cert_der).decode()]},
            )
            self._answer(200, {"token": token, "access_token": token, "expires_in": 300},
                         scope, user)  # fmt: skip

        def _answer(self, status: int, body: dict[str, Any], scope: str, user: str) -> None:
            info.requests.append({"scope": scope, "user": user, "status": str(status)})
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield info
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- registry ---------------------------------------------------------------------------------------


@dataclass
class Registry:
    host: str
    """``127.0.0.1:PORT``."""
    storage: Path
    pid: int
    log: Path

    def blob_data(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (distribution's filesystem layout)."""
        hex_digest = digest.split(":", 1)[1]
        return (
            self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_digest[:2]
            / hex_digest / "data"
        )  # fmt: skip


@contextlib.contextmanager
def registry(
    workdir: Path,
    htpasswd: tuple[str, str] | None = None,
    token_auth: TokenServer | None = None,
) -> Iterator[Registry]:
    """Run ``docker-registry serve`` on 127.0.0.1:<free port> with its own config and storage;
    anonymous by default, htpasswd (Basic) with ``htpasswd=(user, password)``, or token auth
    trusting ``token_auth``. Stopped by PID (TERM, then KILL) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": uuid.uuid4().hex},
    }
    if htpasswd is not None:
        hashed = bcrypt.hashpw(htpasswd[1].encode(), bcrypt.gensalt(rounds=4)).decode()
        (workdir / "htpasswd").write_text(f"{htpasswd[0]}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": "shoal-test", "path": str(workdir / "htpasswd")}}
    elif token_auth is not None:
        config["auth"] = {
            "token": {
                "realm": token_auth.realm,
                "service": token_auth.service,
                "issuer": token_auth.issuer,
                "rootcertbundle": str(token_auth.cert_path),
            }
        }
    config_path = workdir / "registry.yml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    log = workdir / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code in (200, 401):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not answer: {log.read_text()}")
            time.sleep(0.05)
        yield Registry(host=f"127.0.0.1:{port}", storage=storage, pid=proc.pid, log=log)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def push(
    layout: Path,
    ref: str,
    creds: tuple[str, str] | None = None,
    *,
    src_tag: str | None = None,
    all_platforms: bool = False,
) -> None:
    """``skopeo copy oci:LAYOUT:TAG docker://REF`` over plain HTTP; ``src_tag`` defaults to
    ``ref``'s tag; ``all_platforms`` copies an index with every manifest it lists."""
    tag = src_tag or ref.rpartition(":")[2]
    args: list[str | Path] = ["skopeo", "--insecure-policy", "copy", "--quiet",
                              "--dest-tls-verify=false"]  # fmt: skip
    if creds is not None:
        args.append(f"--dest-creds={creds[0]}:{creds[1]}")
    if all_platforms:
        args.append("--all")
    run(*args, f"oci:{layout}:{tag}", f"docker://{ref}")


def write_auth_file(path: Path, host: str, user: str, password: str) -> Path:
    """Docker's config.json format, as ``docker login`` writes it."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return path
