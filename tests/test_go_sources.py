"""Git sources: shallow clones pinned to a commit, cached, tokens kept off disk, hostile URLs refused."""

import subprocess
from pathlib import Path

import pytest

from tests.helpers import set_args
from trainer.cli import main
from trainer.config import GoSource
from trainer.errors import TrainerError
from trainer.synthesis.sources import fetch_source, resolve_ref

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(cwd: Path, *args: str) -> str:
    import os

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
