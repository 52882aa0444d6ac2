"""A client for the OCI distribution API: pull and push images, rootless.

httpx does the HTTP (connection reuse, timeouts, streaming bodies); this
module does the protocol: the ``WWW-Authenticate`` challenge (anonymous and
bearer tokens, basic auth), manifests and image indexes with platform
selection, and blobs streamed to disk with digest and size checks, several
layers at once, retried on 5xx, timeouts and dropped connections (never on
wrong content).  What a hostile registry sends is bounded: a blob by its
descriptor's size, a manifest or token answer by a cap.  Every blob lands
in the :class:`~sandboxer.images.store.Store` through its own lock, so
parallel pulls of one image fetch each blob once.

Plain-HTTP registries: ``--tls-verify=false`` for one command, or a
``registries.conf``-style file (``$XDG_CONFIG_HOME/containers/registries.conf``
or ``/etc/containers/registries.conf``) with ``[[registry]] location = "HOST"
insecure = true``, as podman reads it.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from ..errors import SandboxerError
from .manifests import INDEX_TYPES, LAYER_TYPES, MANIFEST_TYPES, NoPlatformError, choose_manifest, parse_platform
from .progress import Progress
from .reference import Reference
from .store import Image, Store

__all__ = ["RegistryError", "Registry", "pull", "push", "login", "Credentials", "parse_platform"]

_INDEXES = INDEX_TYPES
_LAYER_TYPES = LAYER_TYPES
_RETRIES = 4
_PARALLEL = 3
_CHUNK = 1 << 20
_MAX_JSON = 4 << 20  # manifests, configs and token answers are read whole: podman's limit for manifests
_MAX_ERROR = 64 << 10  # an error answer's body, for its message
#: failures worth another try, as a 5xx is: timeouts, resets, a peer that hung up mid-answer
_TRANSIENT = (httpx.TimeoutException, httpx.ReadError, httpx.WriteError, httpx.CloseError, httpx.RemoteProtocolError)


class RegistryError(SandboxerError):
    """The registry refused, failed or sent something we cannot use."""


Credentials = tuple[str, str]  # (username, password)


# -- configuration: credentials and insecure registries ---------------------------

def _auth_files() -> list[str]:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    files = [os.environ.get("REGISTRY_AUTH_FILE", "")]
    if runtime:
        files.append(os.path.join(runtime, "containers", "auth.json"))
    files += [os.path.join(config, "containers", "auth.json"),
              os.path.join(os.path.expanduser("~"), ".docker", "config.json")]
    return [f for f in files if f]


def stored_credentials(domain: str) -> tuple[Credentials, str] | None:
    """Credentials for ``domain`` from podman's or docker's auth files (first match wins), and that file."""
    keys = [domain, f"https://{domain}"]
    if domain in ("docker.io", "index.docker.io"):  # where 'docker login' keeps Docker Hub's
        keys += ["index.docker.io", "https://index.docker.io/v1/"]
    for path in _auth_files():
        try:
            with open(path) as f:
                auths = json.load(f).get("auths", {})
        except (OSError, ValueError, AttributeError):
            continue
        for key in keys:
            entry = auths.get(key) if isinstance(auths, dict) else None
            if isinstance(entry, dict) and entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (TypeError, ValueError):
                    continue
                return (user, password), path
    return None


def login(domain: str, username: str, password: str, *, tls_verify: bool | None = None) -> str:
    """Check the credentials against the registry, then save them; returns the file written."""
    registry = Registry(domain, credentials=(username, password), tls_verify=tls_verify)
    registry.check_login()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    path = os.environ.get("REGISTRY_AUTH_FILE") or (
        os.path.join(runtime, "containers", "auth.json") if runtime and os.path.isdir(runtime)
        else os.path.join(os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"),
                          "containers", "auth.json"))
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = {}
    data.setdefault("auths", {})[domain] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
    return path


def insecure_registries() -> set[str]:
    """Registries marked ``insecure = true`` (plain HTTP allowed) in registries.conf."""
    import tomllib

    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    out: set[str] = set()
    for path in (os.path.join(config, "containers", "registries.conf"), "/etc/containers/registries.conf"):
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError):
            continue
        for entry in data.get("registry", []):
            if isinstance(entry, dict) and entry.get("insecure") and entry.get("location"):
                out.add(str(entry["location"]))
    return out


# -- the HTTP side ------------------------------------------------------------------

class Registry:
    """One registry: authenticated requests with retries."""

    def __init__(self, domain: str, *, credentials: Credentials | None = None,
                 tls_verify: bool | None = None) -> None:
        self.name = domain  # as references and 'sandboxer login' name it
        self.domain = "registry-1.docker.io" if domain == "docker.io" else domain
        stored = None if credentials else stored_credentials(domain)
        self.credentials = credentials or (stored[0] if stored else None)
        #: the auth file the credentials come from; None when given (by 'sandboxer login')
        self.credentials_file = stored[1] if stored else None
        insecure = tls_verify is False or (tls_verify is None and domain in insecure_registries())
        self.insecure = insecure
        self.scheme = "https"
        self._token: dict[str, str] = {}  # scope -> bearer token
        self._client = httpx.Client(verify=not insecure, timeout=httpx.Timeout(30.0, connect=10.0),
                                    follow_redirects=True)

    def close(self) -> None:
        self._client.close()

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.domain}/v2/{path}"

    def request(self, method: str, path_or_url: str, *, scope: str, headers: dict[str, str] | None = None,
                content: Any = None, stream: bool = False, ok: tuple[int, ...] = (200,)) -> httpx.Response:
        """A request with auth, retried on 5xx and transient network failures; raises on other statuses."""
        url = path_or_url if "://" in path_or_url else self.url(path_or_url)
        delay = 0.2
        for attempt in range(_RETRIES + 1):
            try:
                response = self._send(method, url, scope, headers or {}, content, stream)
            except httpx.ConnectError as e:  # refused, no route, no DNS: retrying will not help
                if self._fall_back_to_http(url):
                    url = url.replace("https://", "http://", 1)
                    continue
                raise RegistryError(f"cannot reach {self.domain}: {e}",
                                    hint="is the registry running and reachable? for a plain-HTTP registry "
                                         "use --tls-verify=false") from None
            except _TRANSIENT as e:
                if attempt == _RETRIES or (content is not None and not isinstance(content, bytes)):
                    raise RegistryError(f"{method} {url}: {type(e).__name__}: {e}",
                                        hint="the connection keeps failing; try again later") from None
                time.sleep(delay)
                delay *= 2
                continue
            except httpx.RequestError as e:  # a redirect loop, an unusable URL or encoding: the same again
                raise RegistryError(f"{method} {url}: {type(e).__name__}: {e}",
                                    hint="the registry's answer cannot be followed; check its address") from None
            if response.status_code >= 500 and attempt < _RETRIES and (content is None or isinstance(content, bytes)):
                response.close()
                time.sleep(delay)
                delay *= 2
                continue
            if response.status_code in ok:
                return response
            self._raise_for(response, method, url)
        raise AssertionError("unreachable")

    def _fall_back_to_http(self, url: str) -> bool:
        """Insecure registries may speak plain HTTP: switch, as podman does (threads may race here)."""
        if self.insecure and url.startswith("https://"):
            self.scheme = "http"
            return True
        return False

    def _send(self, method: str, url: str, scope: str, headers: dict[str, str], content: Any,
              stream: bool) -> httpx.Response:
        for _ in range(2):
            auth_headers = dict(headers)
            if scope in self._token:
                auth_headers["Authorization"] = self._token[scope]
            request = self._client.build_request(method, url, headers=auth_headers, content=content)
            response = self._client.send(request, stream=stream)
            if response.status_code != 401 or (scope in self._token and self._token[scope] == "failed"):
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            response.close()
            self._token[scope] = self._authenticate(challenge, scope) or "failed"
            if hasattr(content, "seek"):
                content.seek(0)
        return response

    def _authenticate(self, challenge: str, scope: str) -> str | None:
        kind, _, params_text = challenge.partition(" ")
        params = _parse_challenge(params_text)
        if kind.lower() == "basic":
            if not self.credentials:
                return None
            user, password = self.credentials
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if kind.lower() != "bearer" or "realm" not in params:
            return None
        realm = params["realm"]
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        auth = httpx.BasicAuth(*self.credentials) if self.credentials else None
        request = self._client.build_request("GET", realm, params={k: v for k, v in query.items() if v})
        try:
            response = self._client.send(request, auth=auth, stream=True)
        except httpx.RequestError as e:
            raise RegistryError(f"token server {realm}: {type(e).__name__}: {e}",
                                hint="is the registry's token server reachable? try again later") from None
        if response.status_code != 200:
            response.close()
            if response.status_code == 401 and self.credentials:
                raise self._refused()
            raise RegistryError(f"token server {realm} refused: HTTP {response.status_code}",
                                hint="check your credentials (sandboxer login)")
        try:
            body = json.loads(_read_capped(response, f"the answer of token server {realm}"))
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            raise RegistryError(f"the answer of token server {realm} is not a JSON object",
                                hint="the registry's authentication is misconfigured; try again later") from None
        return f"Bearer {token}" if token else None

    def _refused(self) -> RegistryError:
        """A 401 to our credentials: given to 'sandboxer login', or found in an auth file."""
        if self.credentials_file is None:
            return RegistryError("login failed: the registry refused this username or password",
                                 hint="check them and try again")
        return RegistryError(f"{self.name} refused the stored credentials (from {self.credentials_file})",
                             hint=f"log in again (sandboxer login {self.name}) if they are out of date; "
                                  "else check the image name and this account's access to it")

    def _raise_for(self, response: httpx.Response, method: str, url: str) -> None:
        status = response.status_code
        if status == 401 and self.credentials:
            response.close()
            raise self._refused()
        try:
            detail = _read_capped(response, "the error", _MAX_ERROR).decode(errors="replace")
            errors = json.loads(detail).get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or detail[:200]
        except (ValueError, AttributeError, RegistryError):
            detail = ""
        hints = {401: "log in first: sandboxer login " + self.name,
                 403: "your credentials do not allow this",
                 404: "check the image name and tag",
                 429: "the registry is rate-limiting; wait and try again"}
        raise RegistryError(f"{method} {url}: HTTP {status}" + (f" ({detail.strip()})" if detail.strip() else ""),
                            hint=hints.get(status))

    def check_login(self) -> None:
        self.request("GET", self.url(""), scope="")

    # -- manifests and blobs ------------------------------------------------------

    def get_manifest(self, ref: Reference, reference: str) -> tuple[bytes, str, str]:
        """(raw bytes, media type, digest) of a manifest or index."""
        import hashlib

        response = self.request("GET", f"{ref.path}/manifests/{reference}", scope=_pull_scope(ref),
                                headers={"Accept": ", ".join(MANIFEST_TYPES.values())}, stream=True)
        raw = _read_capped(response, f"the manifest of {ref}")
        digest = f"sha256:{hashlib.sha256(raw).hexdigest()}"
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"manifest {reference[:19]}… has digest {digest[:19]}…",
                                hint="the registry sent a corrupt or substituted manifest")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise RegistryError(f"manifest of {ref} is not JSON") from None
        media_type = parsed.get("mediaType") or media_type
        return raw, media_type, digest

    def fetch_blob(self, ref: Reference, store: Store, descriptor: dict[str, Any],
                   progress: Progress | None = None) -> str:
        """Into the store, once; either way ``ref``'s repository is remembered as a source of the blob,
        so a push to another repository of this registry mounts it instead of sending it."""
        digest, size = str(descriptor["digest"]), descriptor.get("size")
        if not isinstance(size, int) or size < 0:  # the size bounds the download
            raise RegistryError(f"{ref}: the descriptor of blob {digest[:19]}… has no valid size ({size!r})",
                                hint="the image's manifest is malformed")
        how = "already in the store" if store.has_blob(digest, size) else self._download(ref, store, digest, size,
                                                                                          progress)
        store.note_source(digest, ref.repository)
        return how

    def _download(self, ref: Reference, store: Store, digest: str, size: int, progress: Progress | None) -> str:
        """Under the blob's lock, so parallel pullers wait for the first; retried when the connection
        breaks, never on a digest or size mismatch (a :class:`StoreError`): the same bytes would come."""
        with store.lock(f"blob-{digest.removeprefix('sha256:')}", transient=True):
            if store.has_blob(digest, size):
                return "fetched by another process"
            for attempt in range(_RETRIES + 1):
                response = self.request("GET", f"{ref.path}/blobs/{digest}", scope=_pull_scope(ref), stream=True)
                if progress is not None:
                    progress.start(digest, size)
                try:
                    reader = _ResponseReader(response, lambda n: progress.advance(digest, n) if progress else None)
                    store.put_blob(reader, expected=digest, size=size)
                    return f"downloaded ({size} bytes)"
                except _TRANSIENT as e:
                    if attempt == _RETRIES:
                        raise RegistryError(f"download of {digest[:19]}… failed: {e}",
                                            hint=f"the connection broke before the end of the blob "
                                                 f"{_RETRIES + 1} times; try again later") from None
                finally:
                    response.close()
        raise AssertionError("unreachable")

    def blob_exists(self, ref: Reference, digest: str) -> bool:
        response = self.request("HEAD", f"{ref.path}/blobs/{digest}", scope=_push_scope(ref), ok=(200, 404))
        response.close()
        return response.status_code == 200

    def upload_blob(self, ref: Reference, store: Store, digest: str, mount_from: str | None = None) -> str:
        """Upload one blob unless the registry has it (or can mount it from another repository)."""
        if self.blob_exists(ref, digest):
            return "exists"
        query = f"?mount={digest}&from={mount_from}" if mount_from else ""
        response = self.request("POST", f"{ref.path}/blobs/uploads/{query}", scope=_push_scope(ref, mount_from),
                                ok=(201, 202))
        response.close()
        if response.status_code == 201:
            return "mounted"
        location = response.headers.get("Location", "")
        if not location:
            raise RegistryError("the registry gave no upload location")
        url = str(httpx.URL(self.url("")).join(location))
        url += ("&" if "?" in url else "?") + f"digest={digest}"
        path = store.blob_path(digest)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(os.path.getsize(path))}
        with open(path, "rb") as f:
            response = self.request("PUT", url, scope=_push_scope(ref), headers=headers, content=f, ok=(201,))
        response.close()
        return "uploaded"

    def put_manifest(self, ref: Reference, raw: bytes, media_type: str) -> None:
        tag = ref.tag or ref.digest or "latest"
        response = self.request("PUT", f"{ref.path}/manifests/{tag}", scope=_push_scope(ref),
                                headers={"Content-Type": media_type}, content=raw, ok=(201,))
        response.close()


def _read_capped(response: httpx.Response, what: str, limit: int = _MAX_JSON) -> bytes:
    """A small answer's whole body, refused beyond ``limit`` bytes: a hostile registry could otherwise
    stream gigabytes into memory.  Closes the response."""
    data = bytearray()
    try:
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > limit:
                raise RegistryError(f"{what} is larger than {limit >> 20} MiB; refused",
                                    hint="the registry is broken or hostile")
    except httpx.RequestError as e:
        raise RegistryError(f"{what}: {type(e).__name__}: {e}",
                            hint="the connection broke mid-answer; try again later") from None
    finally:
        response.close()
    return bytes(data)


class _ResponseReader:
    """A streaming response as a ``read(n)`` file for :meth:`Store.put_blob` (memory stays flat)."""

    def __init__(self, response: httpx.Response, on_bytes: Any = None) -> None:
        self._chunks: Iterator[bytes] = response.iter_raw(_CHUNK)
        self._buffer = b""
        self._on_bytes = on_bytes

    def read(self, n: int = -1) -> bytes:
        while len(self._buffer) < max(n, 1):
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            if self._on_bytes is not None:
                self._on_bytes(len(chunk))
            self._buffer += chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


def _parse_challenge(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in _split_params(text):
        key, _, value = part.partition("=")
        out[key.strip().lower()] = value.strip().strip('"')
    return out


def _split_params(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return parts


def _pull_scope(ref: Reference) -> str:
    return f"repository:{ref.path}:pull"


def _push_scope(ref: Reference, mount_from: str | None = None) -> str:
    scope = f"repository:{ref.path}:pull,push"
    return f"{scope} repository:{mount_from}:pull" if mount_from else scope


# -- pull and push ---------------------------------------------------------------------

def pull(ref: Reference, store: Store | None = None, *, platform: str | None = None,
         tls_verify: bool | None = None, progress: Progress | None = None) -> Image:
    """Fetch ``ref`` into the store and name it; returns the image."""
    store = store or Store()
    progress = progress or Progress()
    registry = Registry(ref.domain, tls_verify=tls_verify)
    try:
        raw, media_type, digest = registry.get_manifest(ref, ref.digest or ref.tag or "latest")
        if media_type in _INDEXES:
            raw, media_type, digest = registry.get_manifest(ref, _choose_platform(raw, platform, ref))
        if media_type not in (MANIFEST_TYPES["oci_manifest"], MANIFEST_TYPES["docker_manifest"]):
            raise RegistryError(f"{ref}: unsupported manifest type {media_type!r}",
                                hint="only OCI and Docker schema 2 images are supported")
        manifest = json.loads(raw)
        layers = manifest.get("layers") or []
        for layer in layers:
            if layer.get("mediaType") not in _LAYER_TYPES:
                raise RegistryError(f"{ref}: unsupported layer type {layer.get('mediaType')!r}",
                                    hint="plain, gzip and zstd layers are supported")
        progress.note(f"{ref.familiar}: {len(layers)} layers")
        config_size = manifest["config"].get("size")
        if isinstance(config_size, int) and config_size > _MAX_JSON:  # it is read whole, below
            raise RegistryError(f"{ref}: its config is {config_size} bytes, over the {_MAX_JSON >> 20} MiB limit",
                                hint="the registry is broken or hostile")
        registry.fetch_blob(ref, store, manifest["config"])
        if platform:
            _check_platform(store.read_json(str(manifest["config"]["digest"])), platform, ref)
        with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
            for layer, how in zip(layers, pool.map(lambda d: registry.fetch_blob(ref, store, d, progress), layers),
                                  strict=True):
                progress.finish(str(layer["digest"]), how)
        import io

        stored, _ = store.put_blob(io.BytesIO(raw), expected=digest)
        image = store.image_from_manifest(ref, stored)
        store.layer_dirs(image)  # unpack now, not at the first run
        store.tag(ref._replace(digest=None) if ref.tag else ref, stored)
        return image
    finally:
        registry.close()
        progress.close()


def _choose_platform(raw: bytes, platform: str | None, ref: Reference) -> str:
    try:
        return str(choose_manifest(json.loads(raw), platform, ref.familiar)["digest"])
    except NoPlatformError as e:
        raise RegistryError(str(e), hint=e.hint) from None


def _check_platform(config: dict[str, Any], platform: str, ref: Reference) -> None:
    """A single-platform image asked for with ``--platform`` must be that platform."""
    want_os, want_arch, _ = parse_platform(platform)
    have = (config.get("os"), config.get("architecture"))
    if have != (want_os, want_arch):
        raise RegistryError(f"{ref.familiar} is for {have[0]}/{have[1]}, not {want_os}/{want_arch}",
                            hint="drop --platform, or pick a tag built for that platform")


def push(image_name: str, destination: Reference | None = None, store: Store | None = None, *,
         tls_verify: bool | None = None, progress: Progress | None = None) -> str:
    """Upload an image from the store; returns the manifest digest."""
    store = store or Store()
    progress = progress or Progress()
    image = store.image(image_name)
    ref = destination or image.reference
    registry = Registry(ref.domain, tls_verify=tls_verify)
    try:
        blobs = [str(layer["digest"]) for layer in image.manifest.get("layers", [])]
        blobs.append(image.id)

        def upload(digest: str) -> str:
            # a blob pulled from another repository of the same registry is mounted, not sent again
            same_registry = [src.partition("/")[2] for src in store.sources(digest)
                             if src.partition("/")[0] == ref.domain and src != ref.repository]
            how = registry.upload_blob(ref, store, digest, mount_from=same_registry[0] if same_registry else None)
            store.note_source(digest, ref.repository)  # a source from now on, for the next push
            return how

        with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
            for digest, how in zip(blobs, pool.map(upload, blobs), strict=True):
                progress.finish(digest, how)
        raw = store.read_blob(image.manifest_digest)
        media_type = str(image.manifest.get("mediaType") or MANIFEST_TYPES["oci_manifest"])
        registry.put_manifest(ref, raw, media_type)
        return image.manifest_digest
    finally:
        registry.close()
        progress.close()
