"""Pull and push against a real registry (Debian's docker-registry, the CNCF distribution server) on 127.0.0.1.

The registry runs as this test user on a free port, plain HTTP, with and
without basic auth; a small bearer-token front (a proxy that demands a token
from its own token endpoint, then forwards) exercises the token flow.
skopeo is the independent peer: it reads what we push and pushes what we pull.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import needs_subids, sandboxer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from local_registry import REGISTRY, free_port, start_registry  # noqa: E402  (tools/, not a package)

pytest_plugins = ["pytester"]
pytestmark = [
    pytest.mark.skipif(not os.path.exists(REGISTRY), reason="needs Debian's docker-registry"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="needs busybox-static"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A store with the busybox image, a plain registry, and one with basic auth."""
    bcrypt = pytest.importorskip("bcrypt")
    root = tmp_path_factory.mktemp("registry")
    htpasswd = root / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt.hashpw(b'wonderland', bcrypt.gensalt(rounds=4)).decode()}\n")
    (root / "plain").mkdir()
    (root / "auth").mkdir()
    plain, plain_addr = start_registry(root / "plain")
    auth, auth_addr = start_registry(root / "auth", htpasswd)
    config_home = root / "config"
    (config_home / "containers").mkdir(parents=True)
    # registries.conf marks the plain registry as HTTP; the auth one is reached with --tls-verify=false
    (config_home / "containers" / "registries.conf").write_text(
        f'[[registry]]\nlocation = "{plain_addr}"\ninsecure = true\n')
    tarball = root / "busybox.tar"
    subprocess.run([sys.executable, str(ROOT / "images" / "busybox.py"), str(tarball)], check=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SANDBOXER_DATA_DIR", str(root / "store"))
        mp.setenv("XDG_CONFIG_HOME", str(config_home))
        mp.setenv("REGISTRY_AUTH_FILE", str(root / "auth.json"))
        sandboxer("import", str(tarball), "sandboxer-test/busybox", check=True)
        try:
            yield {"plain": plain_addr, "auth": auth_addr, "root": str(root)}
        finally:
            plain.kill()
            auth.kill()
            plain.wait()
            auth.wait()


def _fresh_store(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    path = Path(env["root"]) / name
    monkeypatch.setenv("SANDBOXER_DATA_DIR", str(path))
    return path


def _skopeo_digest(ref: str, *extra: str) -> str:
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{ref}"],
                         capture_output=True, text=True, check=True).stdout
    return str(json.loads(out)["Digest"])


@needs_subids
def test_push_then_pull_round_trip_and_skopeo_agrees(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    dest = f"{env['plain']}/team/busybox:1.0"
    pushed = sandboxer("push", "sandboxer-test/busybox", dest, check=True).stdout.strip()
    if shutil.which("skopeo"):
        assert _skopeo_digest(dest) == pushed  # an independent client reads what we wrote
    again = sandboxer("push", "sandboxer-test/busybox", dest, check=True)
    assert "exists" in again.stderr  # nothing uploaded twice
    _fresh_store(env, monkeypatch, "pulled")
    pulled = sandboxer("pull", dest, check=True).stdout.strip()
    assert pulled == pushed
    p = sandboxer("run", dest, "cat", "/etc/hostname", check=True)
    assert p.stdout == "busybox\n"
    assert sandboxer("pull", f"{env['plain']}/team/busybox@{pushed}", check=True).stdout.strip() == pushed


@needs_subids
def test_push_mounts_blobs_from_the_repository_they_came_from(env: dict[str, str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    source = f"{env['plain']}/mount/source:1"
    sandboxer("push", "sandboxer-test/busybox", source, check=True)
    _fresh_store(env, monkeypatch, "mounting")
    sandboxer("pull", source, check=True)
    p = sandboxer("push", source, f"{env['plain']}/mount/target:1", check=True)
    assert "mounted" in p.stderr and "uploaded" not in p.stderr, p.stderr  # no layer bytes sent twice
    if shutil.which("skopeo"):
        assert _skopeo_digest(f"{env['plain']}/mount/target:1") == p.stdout.strip()


@needs_subids
@pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo")
def test_pull_what_skopeo_pushed(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    src = f"{env['plain']}/team/source:1"
    sandboxer("push", "sandboxer-test/busybox", src, check=True)
    copied = f"{env['plain']}/other/copied:2"
    # skopeo re-pushes it as a Docker schema 2 image (its own encoding, its own digest)
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--format", "v2s2",
                    f"docker://{src}", f"docker://{copied}"], check=True, capture_output=True)
    digest = _skopeo_digest(copied)
    _fresh_store(env, monkeypatch, "from-skopeo")
    assert sandboxer("pull", copied, check=True).stdout.strip() == digest
    assert sandboxer("run", copied, "sh", "-c", "ls /home", check=True).stdout == "tester\n"


@needs_subids
@pytest.mark.skipif(not shutil.which("script"), reason="needs script(1) for a terminal")
def test_pull_on_a_terminal_draws_progress_bars(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import SANDBOXER

    ref = f"{env['plain']}/team/bars:1"
    sandboxer("push", "sandboxer-test/busybox", ref, check=True)
    _fresh_store(env, monkeypatch, "bars")
    command = " ".join([*SANDBOXER, "pull", ref])
    p = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout
    assert "━" in p.stdout and "downloaded" in p.stdout  # a rich bar, then the blob's outcome


@needs_subids
def test_run_pulls_a_missing_image_once(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    ref = f"{env['plain']}/team/auto:latest"
    sandboxer("push", "sandboxer-test/busybox", ref, check=True)
    _fresh_store(env, monkeypatch, "auto")
    first = sandboxer("run", ref, "true", check=True)
    assert "layers" in first.stderr  # the pull's progress lines
    second = sandboxer("run", ref, "true", check=True)
    assert second.stderr == ""  # already in the store


def test_basic_auth_login_and_errors(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    ref = f"{env['auth']}/secure/busybox:1"
    p = sandboxer("push", "--tls-verify=false", "sandboxer-test/busybox", ref)
    assert p.returncode == 125 and "HTTP 401" in p.stderr and "sandboxer login" in p.stderr
    bad = sandboxer("login", "--tls-verify=false", "-u", "alice", "--password-stdin", env["auth"], input="wrong\n")
    assert bad.returncode == 125 and "login failed: the registry refused this username or password" in bad.stderr
    sandboxer("login", "--tls-verify=false", "-u", "alice", "--password-stdin", env["auth"], input="wonderland\n",
              check=True)
    auth = json.loads((Path(env["root"]) / "auth.json").read_text())
    assert base64.b64decode(auth["auths"][env["auth"]]["auth"]) == b"alice:wonderland"
    pushed = sandboxer("push", "--tls-verify=false", "sandboxer-test/busybox", ref, check=True).stdout.strip()
    _fresh_store(env, monkeypatch, "auth-pull")
    assert sandboxer("pull", "--tls-verify=false", ref, check=True).stdout.strip() == pushed


def test_registry_errors_are_one_line(env: dict[str, str]) -> None:
    p = sandboxer("pull", f"{env['plain']}/no/such:tag")
    assert p.returncode == 125 and "HTTP 404" in p.stderr and "hint:" in p.stderr
    p = sandboxer("pull", f"127.0.0.1:{free_port()}/x/y:1", "--tls-verify=false")
    assert p.returncode == 125 and "cannot reach" in p.stderr
    p = sandboxer("pull", "--platform", "linux/s390x", f"{env['plain']}/team/busybox:1.0")
    assert p.returncode == 125 and "not linux/s390x" in p.stderr
    assert "Traceback" not in p.stderr


@needs_subids
def test_image_index_platform_selection(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from sandboxer.images.store import Store

    repo = f"{env['plain']}/multi/busybox"
    digest = sandboxer("push", "sandboxer-test/busybox", f"{repo}:single", check=True).stdout.strip()
    manifest = Store().read_blob(digest)
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": len(manifest)}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{**entry, "platform": {"os": "linux", "architecture": "riscv64"}},
                           {**entry, "platform": {"os": "linux", "architecture": "amd64"}}]}
    request = urllib.request.Request(f"http://{repo.replace('/multi', '/v2/multi', 1)}/manifests/multi",
                                     data=json.dumps(index).encode(), method="PUT",
                                     headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
    urllib.request.urlopen(request).close()
    _fresh_store(env, monkeypatch, "multi")
    p = sandboxer("pull", "--platform", "linux/amd64", f"{repo}:multi", check=True)
    assert p.stdout.strip() == digest  # the platform's manifest, not the index
    p = sandboxer("pull", "--platform", "linux/s390x", f"{repo}:multi")
    assert p.returncode == 125 and "no image for linux/s390x" in p.stderr and "linux/riscv64" in p.stderr


class _LocalServer(http.server.ThreadingHTTPServer):
    """A test server on a free port of 127.0.0.1."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _TokenFront(_LocalServer):
    """Demands ``Bearer`` tokens from its own ``/token`` (basic auth alice:wonderland), then proxies."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.tokens_issued = 0
        super().__init__(("127.0.0.1", 0), _TokenHandler)


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    server: _TokenFront

    def log_message(self, *_args: object) -> None:
        pass

    def _proxy(self) -> None:
        if self.path.startswith("/token"):
            if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"alice:wonderland").decode():
                self.send_response(401)
                self.end_headers()
                return
            self.server.tokens_issued += 1
            body = json.dumps({"token": "t0ken"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.headers.get("Authorization") != "Bearer t0ken":
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://{self.server.address}/token",'
                                                 f'service="test",scope="repository:x:pull"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("authorization", "connection")}
        request = urllib.request.Request(f"http://{self.server.upstream}{self.path}", data=body,
                                         headers=headers, method=self.command)
        try:
            response = urllib.request.urlopen(request)
        except urllib.error.HTTPError as e:
            response = e
        data = response.read()
        self.send_response(response.status)
        for key, value in response.headers.items():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value.replace(self.server.upstream, self.server.address))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _proxy


def test_bearer_token_flow(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    front = _TokenFront(env["plain"])
    thread = threading.Thread(target=front.serve_forever, daemon=True)
    thread.start()
    try:
        ref = f"{front.address}/tokened/busybox:1"
        anonymous = sandboxer("push", "--tls-verify=false", "sandboxer-test/busybox", ref)
        assert anonymous.returncode == 125 and "token server" in anonymous.stderr
        bad = sandboxer("login", "--tls-verify=false", "-u", "alice", "--password-stdin", front.address,
                        input="wrong\n")
        assert bad.returncode == 125 and "login failed: the registry refused" in bad.stderr, bad.stderr
        sandboxer("login", "--tls-verify=false", "-u", "alice", "--password-stdin", front.address,
                  input="wonderland\n", check=True)
        pushed = sandboxer("push", "--tls-verify=false", "sandboxer-test/busybox", ref, check=True).stdout.strip()
        _fresh_store(env, monkeypatch, "tokened")
        assert sandboxer("pull", "--tls-verify=false", ref, check=True).stdout.strip() == pushed
        assert front.tokens_issued >= 2
    finally:
        front.shutdown()


@needs_subids
def test_pytest_marker_pulls_a_missing_image_once(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                  pytester: pytest.Pytester) -> None:
    ref = f"{env['plain']}/pytest/busybox:1"
    sandboxer("push", "sandboxer-test/busybox", ref, check=True)
    store = _fresh_store(env, monkeypatch, "pytest-pull")
    pytester.makepyfile(f"""
        import os, pytest

        @pytest.mark.parametrize("n", range(4))
        @pytest.mark.sandbox(image="{ref}")
        def test_in_pulled_image(n):
            assert os.path.exists("/bin/busybox") and not os.path.exists("/etc/debian_version")
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    assert result.parseoutcomes() == {"passed": 4}, result.stdout.str()
    assert len(os.listdir(store / "layers")) == 1


@needs_subids
def test_zstd_layers_import_push_pull_and_run(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    zstandard = pytest.importorskip("zstandard")
    from sandboxer.images.store import Store

    plain = Path(env["root"]) / "busybox.tar"
    packed = Path(env["root"]) / "busybox.tar.zst"
    with open(plain, "rb") as src, open(packed, "wb") as dst:
        zstandard.ZstdCompressor().copy_stream(src, dst)
    sandboxer("import", str(packed), "sandboxer-test/zstd", check=True)
    layer = Store().image("sandboxer-test/zstd").manifest["layers"][0]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    ref = f"{env['plain']}/zstd/busybox:1"
    pushed = sandboxer("push", "sandboxer-test/zstd", ref, check=True).stdout.strip()
    _fresh_store(env, monkeypatch, "zstd")
    assert sandboxer("pull", ref, check=True).stdout.strip() == pushed
    assert sandboxer("run", ref, "cat", "/etc/hostname", check=True).stdout == "busybox\n"


@needs_subids
def test_push_mounts_blobs_it_pushed_or_found_in_the_store_before(env: dict[str, str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    first = f"{env['plain']}/mount/first:1"
    sandboxer("push", "sandboxer-test/busybox", first, check=True)
    p = sandboxer("push", "sandboxer-test/busybox", f"{env['plain']}/mount/second:1", check=True)
    assert "mounted" in p.stderr and "uploaded" not in p.stderr, p.stderr  # the first push is a source
    store = _fresh_store(env, monkeypatch, "found")
    sandboxer("pull", first, check=True)
    shutil.rmtree(store / "sources")  # blobs in the store from nowhere known, as after 'load'
    assert "already in the store" in sandboxer("pull", first, check=True).stderr
    p = sandboxer("push", first, f"{env['plain']}/mount/third:1", check=True)
    assert "mounted" in p.stderr and "uploaded" not in p.stderr, p.stderr


def test_refused_stored_credentials_say_where_they_came_from(env: dict[str, str], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {env["auth"]: {"auth": base64.b64encode(b"alice:stale").decode()}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    p = sandboxer("pull", "--tls-verify=false", f"{env['auth']}/secure/busybox:1")
    assert p.returncode == 125 and f"refused the stored credentials (from {auth_file})" in p.stderr, p.stderr
    assert f"hint: log in again (sandboxer login {env['auth']})" in p.stderr


def test_docker_hub_credentials_of_docker_login_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sandboxer.images.registry import Registry, stored_credentials

    config = tmp_path / ".docker" / "config.json"
    config.parent.mkdir()
    auth = base64.b64encode(b"bob:pw").decode()
    config.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": auth}}}))  # as docker login
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    assert stored_credentials("docker.io") == (("bob", "pw"), str(config))
    registry = Registry("docker.io")  # sends nothing until asked
    try:
        assert registry.credentials == ("bob", "pw")
    finally:
        registry.close()


def _sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


_LAYER = b"not a tar: no pull from the hostile registry gets as far as unpacking\n"
_CONFIG = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [_sha(_LAYER)]}}).encode()


def _manifest(config_size: int = len(_CONFIG)) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(_CONFIG),
                   "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _sha(_LAYER),
                    "size": len(_LAYER)}],
    }).encode()


class _Hostile(_LocalServer):
    """A registry misbehaving by repository (``NAME/img:1``): ``endless`` streams the layer on and on,
    ``corrupt`` sends other bytes of the right size, ``cut`` hangs up part-way through it; ``huge``
    streams an endless manifest, ``bigconfig`` declares an 8 MiB config, ``loop`` redirects to
    itself, ``badtoken`` demands a token its token server answers with HTML."""

    daemon_threads = True

    def __init__(self) -> None:
        self.gets: collections.Counter[str] = collections.Counter()
        self.streamed = 0  # bytes of endless answers the client took before hanging up
        super().__init__(("127.0.0.1", 0), _HostileHandler)


class _HostileHandler(http.server.BaseHTTPRequestHandler):
    server: _Hostile
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        for key, value in (("Content-Length", str(len(body))), *headers):
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _endless(self, first: bytes) -> None:
        """``first``, then zeros until the client hangs up (or 128 MiB): no length, the end is the close."""
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(first)
            for _ in range(128):
                self.wfile.write(bytes(1 << 20))
                self.server.streamed += 1 << 20
        except OSError:
            pass

    def do_GET(self) -> None:
        self.server.gets[self.path] += 1
        repo, _, rest = self.path.removeprefix("/v2/").partition("/img/")
        if self.path.startswith("/token"):
            return self._send(200, b"<html>oops</html>")
        if repo == "badtoken":
            return self._send(401, headers=(("WWW-Authenticate", f'Bearer realm="http://{self.server.address}/token"'),))
        if repo == "loop":
            return self._send(302, headers=(("Location", self.path),))
        if rest.startswith("manifests/"):
            if repo == "huge":
                return self._endless(b"{")
            body = _manifest(8 << 20) if repo == "bigconfig" else _manifest()
            return self._send(200, body, (("Content-Type", "application/vnd.oci.image.manifest.v1+json"),))
        if rest == f"blobs/{_sha(_CONFIG)}":
            return self._send(200, _CONFIG)
        if rest == f"blobs/{_sha(_LAYER)}" and repo == "endless":
            return self._endless(_LAYER)
        if rest == f"blobs/{_sha(_LAYER)}" and repo == "corrupt":
            return self._send(200, _LAYER[::-1])
        if rest == f"blobs/{_sha(_LAYER)}" and repo == "cut":
            self.send_response(200)
            self.send_header("Content-Length", str(len(_LAYER)))
            self.end_headers()
            self.wfile.write(_LAYER[:10])
            self.close_connection = True
            return None
        return self._send(404)


@pytest.fixture
def hostile() -> Iterator[_Hostile]:
    server = _Hostile()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_blob_beyond_its_size_or_digest_fails_at_once(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                        hostile: _Hostile) -> None:
    store = _fresh_store(env, monkeypatch, "hostile-blobs")
    p = sandboxer("pull", "--tls-verify=false", f"{hostile.address}/endless/img:1")
    assert p.returncode == 125 and f"larger than the {len(_LAYER)} bytes expected" in p.stderr, p.stderr
    assert "hint:" in p.stderr
    assert hostile.gets[f"/v2/endless/img/blobs/{_sha(_LAYER)}"] == 1  # not retried
    assert hostile.streamed < 64 << 20  # stopped at the first chunk too many, not at the end
    assert os.listdir(store / "tmp") == []  # the partial blob is gone
    p = sandboxer("pull", "--tls-verify=false", f"{hostile.address}/corrupt/img:1")
    assert p.returncode == 125 and "has digest" in p.stderr, p.stderr
    assert hostile.gets[f"/v2/corrupt/img/blobs/{_sha(_LAYER)}"] == 1


def test_a_huge_manifest_or_config_is_refused_at_4_mib(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                       hostile: _Hostile) -> None:
    _fresh_store(env, monkeypatch, "hostile-manifest")
    p = sandboxer("pull", "--tls-verify=false", f"{hostile.address}/huge/img:1")
    assert p.returncode == 125 and "manifest" in p.stderr and "larger than 4 MiB" in p.stderr, p.stderr
    assert "hint:" in p.stderr and hostile.streamed < 64 << 20
    p = sandboxer("pull", "--tls-verify=false", f"{hostile.address}/bigconfig/img:1")
    assert p.returncode == 125 and "config is 8388608 bytes, over the 4 MiB limit" in p.stderr, p.stderr
    assert hostile.gets[f"/v2/bigconfig/img/blobs/{_sha(_CONFIG)}"] == 0  # refused before any byte of it


def test_network_failures_are_one_line_with_a_hint(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                   hostile: _Hostile) -> None:
    _fresh_store(env, monkeypatch, "hostile-network")
    for repo, what in (("loop", "TooManyRedirects"), ("badtoken", "not a JSON object"),
                       ("cut", "download of")):
        p = sandboxer("pull", "--tls-verify=false", f"{hostile.address}/{repo}/img:1")
        assert p.returncode == 125 and what in p.stderr and "hint:" in p.stderr, p.stderr
        assert "internal error" not in p.stderr
    assert hostile.gets["/v2/loop/img/manifests/1"] == 21  # httpx's 20 redirects, once: not retried
    assert hostile.gets[f"/v2/cut/img/blobs/{_sha(_LAYER)}"] == 5  # a broken connection is retried


@pytest.mark.parametrize("failure", [httpx.ConnectTimeout, httpx.WriteTimeout, httpx.PoolTimeout, httpx.ReadError])
def test_transient_network_failures_are_retried(failure: type[httpx.TransportError],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from sandboxer.images.registry import Registry, RegistryError

    sent: list[httpx.Request] = []
    failing = {"first": 2}  # requests that fail before one gets through

    def transport(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if len(sent) <= failing["first"]:
            raise failure("it failed", request=request)
        return httpx.Response(200, json={})

    monkeypatch.setattr("time.sleep", lambda _seconds: None)
    registry = Registry("127.0.0.1:9", tls_verify=False)
    registry.close()
    registry._client = httpx.Client(transport=httpx.MockTransport(transport))  # no network: the failures are made
    registry.check_login()
    assert len(sent) == 3
    sent.clear()
    failing["first"] = 99
    with pytest.raises(RegistryError) as caught:
        registry.check_login()
    assert len(sent) == 5 and failure.__name__ in str(caught.value) and caught.value.hint
