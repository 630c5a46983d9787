"""Git sources: shallow clones pinned to a commit, cached, tokens kept off disk, hostile URLs refused."""

import base64
import datetime
import http.server
import json
import os
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from tests.helpers import set_args
from trainer.cli import main
from trainer.data_config import GoSource
from trainer.errors import TrainerError
from trainer.synthesis.sources import fetch_source, resolve_ref

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=os.environ | GIT_ENV)
    return done.stdout.strip()


def commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", name)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def upstream(tmp_path) -> Path:
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "go.mod").write_text("module example.com/up\n")
    commit(repo, "up.go", "package up\n\n// Hello greets.\nfunc Hello() {}\n")
    git(repo, "tag", "-a", "v1.0.0", "-m", "release")
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {repo.parent / 'hook-ran'}\n")
    hook.chmod(0o755)
    return repo


def test_clone_is_pinned_to_the_resolved_commit_and_reused_until_the_ref_moves(upstream, tmp_path):
    url, cache = f"file://{upstream}", tmp_path / "cache"
    first_commit = git(upstream, "rev-parse", "HEAD")
    first = fetch_source(GoSource(url=url, ref="main"), cache)
    assert (first.commit, first.cached, first.name) == (first_commit, False, "upstream")
    assert first.root.name == first_commit and (first.root / "up.go").is_file()
    assert not (first.root / ".git").exists()  # a snapshot, not a working copy
    assert fetch_source(GoSource(url=url, ref="main"), cache).cached is True
    tagged = fetch_source(GoSource(url=url, ref="v1.0.0"), cache)  # an annotated tag resolves to its commit
    assert (tagged.commit, tagged.cached) == (first_commit, True)

    moved = commit(upstream, "more.go", "package up\n\nfunc More() {}\n")
    second = fetch_source(GoSource(url=url, ref="main"), cache)
    assert (second.commit, second.cached) == (moved, False)
    assert (second.root / "more.go").is_file() and not (first.root / "more.go").exists()
    pinned = fetch_source(GoSource(url=url, ref=first_commit), cache)  # a full SHA is used as given
    assert (pinned.commit, pinned.cached) == (first_commit, True)
    assert not (tmp_path / "hook-ran").exists()  # the upstream's hooks never run here


def test_github_token_reaches_git_only_through_the_environment(upstream, tmp_path, monkeypatch):
    secret = "ghp_SECRETTOKEN123456"
    monkeypatch.setenv("GITHUB_TOKEN", secret)
    local = fetch_source(GoSource(url=f"file://{upstream}"), tmp_path / "cache")
    written = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert written and not [p for p in written if secret.encode() in p.read_bytes()]
    with pytest.raises(TrainerError) as failure:
        resolve_ref(f"file://{tmp_path / 'missing'}", None)
    assert secret not in str(failure.value)
    assert local.commit == git(upstream, "rev-parse", "HEAD")


class GitHubStandIn(http.server.BaseHTTPRequestHandler):
    """github.com as git reaches it through `http.proxy`: each CONNECT tunnel is answered with TLS under a
    certificate for github.com (trusted through `GIT_SSL_CAINFO`), and the requests inside it by `git http-backend`
    serving `server.project_root`. Every request's method, path and headers are recorded in `server.seen`."""

    protocol_version = "HTTP/1.1"  # keeps the tunnel open for the requests inside it

    def log_message(self, format, *args):  # quiet: failures show in the test's assertions
        pass

    def do_CONNECT(self):
        self.server.seen.append(("CONNECT", self.path, self.headers))
        self.send_response(200, "Connection established")
        self.end_headers()
        self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        self.setup()  # connection, rfile and wfile over TLS from here on

    def do_GET(self):
        self.serve_git(b"")

    def do_POST(self):
        self.serve_git(self.rfile.read(int(self.headers["Content-Length"])))

    def serve_git(self, body: bytes) -> None:
        self.server.seen.append((self.command, self.path, self.headers))
        path, _, query = self.path.partition("?")
        cgi = {
            "GIT_PROJECT_ROOT": str(self.server.project_root), "GIT_HTTP_EXPORT_ALL": "1", "PATH": os.environ["PATH"],
            "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }  # fmt: skip
        done = subprocess.run(["git", "http-backend"], input=body, env=cgi, capture_output=True, check=True)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        status = fields.pop("Status", "200 OK")
        self.send_response(int(status.split()[0]))
        for name, value in fields.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def github_stand_in(tmp_path, monkeypatch) -> http.server.ThreadingHTTPServer:
    """https://github.com/ for git in this process and its children, served from `server.project_root`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "github.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("github.com")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    (tls_dir / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tls_dir / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GitHubStandIn)
    server.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.tls.load_cert_chain(tls_dir / "cert.pem", tls_dir / "key.pem")
    server.project_root, server.seen = tmp_path / "github", []
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text(f"[http]\n\tproxy = http://127.0.0.1:{server.server_address[1]}\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.setenv("GIT_SSL_CAINFO", str(tls_dir / "cert.pem"))  # the variable wins over http.sslCAInfo
    for proxy_variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(proxy_variable, raising=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_github_token_is_sent_to_github_as_a_header_and_written_nowhere(
    upstream, github_stand_in, tmp_path, capsys, monkeypatch
):
    """The token planted in GITHUB_TOKEN is really used: `trainer synthesize --source https://github.com/…` clones
    through the stand-in, which receives it as git's basic Authorization header inside TLS to github.com (never in
    the CONNECT to the proxy); no file the run writes, nor its output or its error for a missing repository, holds
    the token or that header."""
    secret = "ghp_planted_0a9s8d7f6g"
    header = "basic " + base64.b64encode(f"x-access-token:{secret}".encode()).decode()
    (github_stand_in.project_root / "owner").mkdir(parents=True)
    git(tmp_path, "clone", "-q", "--bare", str(upstream), str(github_stand_in.project_root / "owner" / "up.git"))
    out = tmp_path / "out"
    args = [*set_args([f"data.output_dir={out}", f"data.cache_dir={tmp_path / 'cache'}", "data.sources=[]"])]
    monkeypatch.setenv("GITHUB_TOKEN", secret)
    assert main(["synthesize", *args, "--source", "https://github.com/owner/up.git"]) == 0
    assert main(["synthesize", *args, "--source", "https://github.com/owner/missing.git"]) == 2
    output = capsys.readouterr()

    inside = [headers for method, _, headers in github_stand_in.seen if method != "CONNECT"]
    connects = [headers for method, _, headers in github_stand_in.seen if method == "CONNECT"]
    assert len(inside) >= 3 and connects  # ls-remote, fetch's ref advertisement and pack, and the missing repo
    assert [h.get("Authorization") for h in inside] == [header] * len(inside)
    assert not [h for h in connects if any(secret in v or header in v for v in h.values())]
    manifest = json.loads((out / "manifest.json").read_text())
    hello = git(upstream, "rev-parse", "HEAD")
    assert [(s["url"], s["commit"]) for s in manifest["sources"]] == [("https://github.com/owner/up.git", hello)]
    assert "Hello" in (out / "symbols.jsonl").read_text()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(github_stand_in.project_root)]
    leaks = [str(p) for p in written if secret.encode() in p.read_bytes() or header.encode() in p.read_bytes()]
    assert len(written) > 10 and leaks == []
    assert "missing.git" in output.err and secret not in output.out + output.err and header not in output.err


def test_unknown_ref_is_a_clear_error(upstream, tmp_path):
    with pytest.raises(TrainerError, match="ref 'nope' not found on the remote"):
        fetch_source(GoSource(url=f"file://{upstream}", ref="nope"), tmp_path / "cache")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("--upload-pack=touch /tmp/pwned", "must not start with '-'"),
        ("ext::sh -c touch% /tmp/pwned", "source folder not found"),
        ("/no/such/folder", "source folder not found"),
        ("https://me:ghp_planted@github.com/o/r", "must not hold credentials"),
    ],
)
def test_hostile_or_missing_sources_are_refused(tmp_path, capsys, url, message):
    args = [*set_args([f"data.output_dir={tmp_path / 'out'}", "data.sources=[]"]), "--source", url]
    code = main(["synthesize", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_local_git_checkout_records_its_commit(upstream, tmp_path):
    local = fetch_source(GoSource(url=str(upstream)), tmp_path / "cache")
    assert (local.root, local.commit, local.cached) == (upstream, git(upstream, "rev-parse", "HEAD"), False)


def test_submodules_are_fetched_only_when_asked_and_obey_the_transport_rules(upstream, tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    git(library, "init", "-q", "-b", "main")
    commit(library, "lib.go", "package lib\n")
    git(upstream, "-c", "protocol.file.allow=always", "submodule", "add", "-q", f"file://{library}", "lib")
    git(upstream, "commit", "-q", "-m", "add lib")
    url = f"file://{upstream}"

    default = fetch_source(GoSource(url=url), tmp_path / "cache")
    assert (default.root / "lib").is_dir() and not any((default.root / "lib").iterdir())
    asked = fetch_source(GoSource(url=url, submodules=True), tmp_path / "cache")
    assert (asked.root / "lib" / "lib.go").read_text() == "package lib\n"
    assert not list(asked.root.rglob(".git"))  # snapshots: no git metadata, no remote URLs

    (upstream / ".gitmodules").write_text('[submodule "lib"]\n\tpath = lib\n\turl = ext::sh -c touch% /tmp/pwned\n')
    git(upstream, "commit", "-q", "-am", "hostile submodule URL")
    with pytest.raises(TrainerError, match="git submodule: fatal: transport 'ext' not allowed"):
        fetch_source(GoSource(url=url, submodules=True), tmp_path / "cache")
    assert not Path("/tmp/pwned").exists()
