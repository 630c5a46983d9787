"""Go sources as local folders: a local path as is, a git URL as a shallow clone pinned to its commit.

Clones live in `<cache>/repos/<name>-<url hash>/<commit>` and are reused while the ref still points at that
commit. git is always called with argument lists, `--` before URLs, hooks off, symlinks checked out as plain files
and only the https/ssh/file transports allowed; submodules are fetched only when the source asks for them. A
`GITHUB_TOKEN` reaches git through the environment (`GIT_CONFIG_*`), never through a URL, an argument or a file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from trainer.data_config import GoSource
from trainer.errors import TrainerError
from trainer.redact import redact

REMOTE = re.compile(r"^(https://|ssh://|file://|[\w.-]+@[\w.-]+:)")
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
SAFE_GIT = ["-c", "core.hooksPath=/dev/null", "-c", "core.symlinks=false", "-c", "protocol.ext.allow=never"]
COMPLETE = ".trainer-complete"


def pinned(name: str, commit: str | None) -> str:
    """`name@` and the commit's first 12 hex digits, as messages and row sources name a source; `name` without one."""
    return f"{name}@{commit[:12]}" if commit else name


@dataclass
class LocalSource:
    name: str
    url: str
    root: Path
    commit: str | None  # None for a folder that is not a git checkout
    cached: bool  # True when an existing clone was reused


def _git_env() -> dict[str, str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": "https:ssh:file", "GIT_CONFIG_NOSYSTEM": "1"}
    token = os.environ.get("GITHUB_TOKEN")
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env |= {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.https://github.com/.extraheader",
            "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: basic {basic}",
        }
    return env


def _git(*args: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            ["git", *SAFE_GIT, *args], cwd=cwd, env=_git_env(), capture_output=True, text=True, timeout=600
        )
    except FileNotFoundError:
        raise TrainerError("git is not installed; it is needed for git URL sources (data.sources)") from None
    except subprocess.TimeoutExpired:
        raise TrainerError(f"git {args[0]} took over 10 minutes") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        message = next((line for line in lines if line.startswith("fatal: ")), lines[-1])  # the cause, not a retry
        raise TrainerError(f"git {args[0]}: {redact(message)}")
    return done.stdout


def source_name(source: GoSource) -> str:
    if source.name:
        return source.name
    if not REMOTE.match(source.url):  # a folder: its own name, also for `.` or `..`
        return Path(source.url).expanduser().resolve().name or "source"
    tail = source.url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail.removesuffix(".git") or "source"


def resolve_ref(url: str, ref: str | None) -> str:
    """The commit `ref` (default: HEAD) points at on the remote; annotated tags are peeled to their commit."""
    if ref and FULL_SHA.match(ref):
        return ref
    wanted = ref or "HEAD"
    listing = [
        line.split("\t") for line in _git("ls-remote", "--", url, wanted, f"{wanted}^{{}}").splitlines() if "\t" in line
    ]
    exact = {name: sha for sha, name in listing}
    for name in (f"refs/tags/{wanted}^{{}}", f"refs/tags/{wanted}", f"refs/heads/{wanted}", wanted):
        if name in exact:
            return exact[name]
    if listing:
        return listing[0][0]
    raise TrainerError(f"{url}: ref {wanted!r} not found on the remote")


def _clone(url: str, ref: str | None, commit: str, destination: Path, submodules: bool) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".clone-", dir=destination.parent))
    try:
        _git("init", "--quiet", str(work))
        # A branch or tag (or HEAD) by name: every server serves those; a bare commit only where it allows that.
        wanted = ref if ref and not FULL_SHA.match(ref) else (commit if ref else "HEAD")
        try:
            _git("fetch", "--quiet", "--depth", "1", "--no-tags", "--", url, wanted, cwd=work)
        except TrainerError:
            if wanted == commit:
                raise
            _git("fetch", "--quiet", "--depth", "1", "--no-tags", "--", url, commit, cwd=work)
        _git("checkout", "--quiet", "--detach", "FETCH_HEAD", cwd=work)
        got = _git("rev-parse", "HEAD", cwd=work).strip()
        if got != commit:
            raise TrainerError(f"{url}: {ref or 'HEAD'} moved while cloning ({commit[:12]} → {got[:12]}); run again")
        if submodules:  # child gits inherit SAFE_GIT and the transport list, so a submodule URL gets no more
            _git("submodule", "update", "--init", "--recursive", "--depth", "1", cwd=work)
        for git_dir in list(work.rglob(".git")):  # history is not needed: the manifest has the commit
            shutil.rmtree(git_dir) if git_dir.is_dir() else git_dir.unlink(missing_ok=True)
        (work / COMPLETE).write_text(commit + "\n", encoding="utf-8")
        work.rename(destination)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fetch_source(source: GoSource, cache_dir: Path) -> LocalSource:
    """A local folder holding the source: the path itself, or a (cached) shallow clone at the resolved commit."""
    name, url = source_name(source), source.url
    if not REMOTE.match(url):
        root = Path(url).expanduser()
        if not root.is_dir():
            raise TrainerError(f"{url}: source folder not found (data.sources, or --source)")
        commit = None
        if (root / ".git").exists():
            try:
                commit = _git("-C", str(root), "rev-parse", "HEAD").strip()
            except TrainerError:
                commit = None
        return LocalSource(name, url, root, commit, cached=False)
    commit = resolve_ref(url, source.ref)
    key = f"{url} submodules" if source.submodules else url
    destination = cache_dir / "repos" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}" / commit
    if (destination / COMPLETE).is_file():
        return LocalSource(name, url, destination, commit, cached=True)
    _clone(url, source.ref, commit, destination, source.submodules)
    return LocalSource(name, url, destination, commit, cached=False)
