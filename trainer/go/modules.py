"""The scratch Go module that snippets are compiled in, resolved offline: the framework and its dependencies as
directory replacements.

Starting from the framework's go.mod, every `require`d module is looked up, transitively, in local folders: the
module cache at the exact version (`$GOMODCACHE/path@version`, where `go mod download` put it), else a GOPATH-style
tree (Debian's /usr/share/gocode/src, `$GOPATH/src`) at the module path, or at the path without its `/vN` suffix when
that folder's go.mod declares the suffixed path (Debian keeps chi v5 at github.com/go-chi/chi). Debian's folders have
no module metadata of their own (no go.mod in ugorji/go/codec; dependency go.mods naming versions of modules that
are not installed), so each module found gets a mirror under `<work_dir>/modules`: its own go.mod rewritten to
`module <path>` and a `go` line no newer than the local toolchain, with no requirements, beside symlinks to the
folder's entries. The scratch go.mod then requires every module of the closure at a placeholder version and
replaces each with its mirror: one flat build list with no version to choose and no go.sum (directory replacements
are not checksummed). A required module found nowhere is left out; a snippet that needs one of its packages fails
with go's own "cannot find module providing package" line (GOPROXY=off: nothing is downloaded).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from trainer.errors import TrainerError
from trainer.go.repo import COMMENT, declared_module, read_go_mod

SCRATCH_MODULE = "trainercheck"
DEBIAN_GOCODE = Path("/usr/share/gocode/src")
GO_LINE = re.compile(r"^go\s+(\d+)\.(\d+)", re.MULTILINE)
REQUIRE_BLOCK = re.compile(r"^require\s*\((.*?)^\)", re.MULTILINE | re.DOTALL)
REQUIRE_LINE = re.compile(r"^require\s+([^\s(]+)\s+(\S+)", re.MULTILINE)
MAJOR_SUFFIX = re.compile(r"/v(\d+)$")
GOPKG_SUFFIX = re.compile(r"^gopkg\.in/.*\.v(\d+)$")
GO_COMMAND_TIMEOUT_S = 600


@dataclass(frozen=True)
class Toolchain:
    go: str  # the go binary
    version: tuple[int, int]  # go1.19.8 → (1, 19)
    gopath: tuple[Path, ...]
    modcache: Path


@dataclass(frozen=True)
class Module:
    path: str
    folder: Path  # where its source lies
    go_version: str  # the `go` line its mirror gets


@cache
def toolchain() -> Toolchain:
    """The local go command, or a TrainerError naming it when it is missing."""
    go = shutil.which("go")
    if go is None:
        raise TrainerError("the compile check needs the Go toolchain: `go` is not on PATH (install golang-go)")
    out = subprocess.run(
        [go, "env", "-json", "GOVERSION", "GOPATH", "GOMODCACHE"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise TrainerError(f"`go env` failed: {out.stderr.strip()}")
    env = json.loads(out.stdout)
    match = re.match(r"go(\d+)\.(\d+)", env["GOVERSION"])
    if match is None:
        raise TrainerError(f"unrecognised Go version {env['GOVERSION']!r} from {go}")
    return Toolchain(
        go=go,
        version=(int(match[1]), int(match[2])),
        gopath=tuple(Path(p) for p in env["GOPATH"].split(os.pathsep) if p),
        modcache=Path(env["GOMODCACHE"]),
    )


def go_env(work_dir: Path) -> dict[str, str]:
    """Offline, no checksum database, the local toolchain only, the build cache under work_dir."""
    return {
        **os.environ,
        "GO111MODULE": "on",
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "GOSUMDB": "off",
        "GOTOOLCHAIN": "local",
        "GOWORK": "off",
        "GOCACHE": str(work_dir / "gocache"),
    }


def run_go(args: list[str], cwd: Path, work_dir: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [toolchain().go, *args],
            cwd=cwd,
            env=go_env(work_dir),
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=GO_COMMAND_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TrainerError(f"`go {' '.join(args[:2])}` in {cwd} ran over {GO_COMMAND_TIMEOUT_S} s") from exc


def requirements(go_mod: str) -> list[tuple[str, str]]:
    """(module path, version) of each `require` in a go.mod's text."""
    text = COMMENT.sub("", go_mod)
    found = REQUIRE_LINE.findall(text)
    for block in REQUIRE_BLOCK.findall(text):
        found += [tuple(line.split()[:2]) for line in block.splitlines() if len(line.split()) >= 2]
    return [(path.strip('"'), version) for path, version in found]


def _escaped(text: str) -> str:
    """The module cache's case encoding: an upper-case letter becomes `!` and its lower case."""
    return re.sub(r"[A-Z]", lambda m: "!" + m[0].lower(), text)


def find_module(path: str, version: str, tools: Toolchain) -> Path | None:
    """The local folder holding module `path` (see the module docstring for where it looks)."""
    cached = tools.modcache / f"{_escaped(path)}@{_escaped(version)}"
    if cached.is_dir():
        return cached
    unsuffixed = MAJOR_SUFFIX.sub("", path)
    for tree in (DEBIAN_GOCODE, *(p / "src" for p in tools.gopath)):
        for candidate in dict.fromkeys((tree / path, tree / unsuffixed)):
            if candidate.is_dir() and declared_module(candidate) in (None, path):
                return candidate
    return None


def _go_line(go_mod: str, tools: Toolchain) -> str:
    """The `go` line of a module's go.mod text, capped at the local toolchain's (which it defaults to)."""
    match = GO_LINE.search(go_mod)
    declared = (int(match[1]), int(match[2])) if match else tools.version
    major, minor = min(declared, tools.version)
    return f"{major}.{minor}"


def closure(import_path: str, root: Path) -> list[Module]:
    """The framework and every module its go.mod requires, transitively, that lies in a local folder."""
    tools = toolchain()
    if not root.is_dir():
        raise TrainerError(f"the compile check's framework source {root} is not a folder")
    found, modules = [(import_path, root)], []
    seen = {import_path}
    for path, folder in found:  # grows while it is walked: breadth first
        go_mod = read_go_mod(folder) or ""  # each go.mod read once, as repo.py reads them
        modules.append(Module(path, folder, _go_line(go_mod, tools)))
        for required, version in requirements(go_mod):
            if required in seen:
                continue
            seen.add(required)
            if (module_folder := find_module(required, version, tools)) is not None:
                found.append((required, module_folder))
    return modules


def placeholder_version(path: str) -> str:
    """A version the path's major-version suffix allows (`/v5` → v5.0.0, `gopkg.in/yaml.v3` → v3.0.0)."""
    match = MAJOR_SUFFIX.search(path) or GOPKG_SUFFIX.search(path)
    return f"v{match[1]}.0.0" if match else "v0.0.0"


def mirror(module: Module, work_dir: Path, other_modules: set[Path]) -> Path:
    """A folder that is the module with a go.mod of its own (see the module docstring), without the subfolders that
    are other modules of the build (Debian keeps github.com/ugorji/go/codec, a module of its own upstream, inside
    github.com/ugorji/go: both would provide its packages); reused while its entries and go line are unchanged."""
    entries = sorted(
        entry.name
        for entry in module.folder.iterdir()
        if entry.name not in ("go.mod", "go.sum") and entry not in other_modules
    )
    key = hashlib.sha256(json.dumps([module.path, str(module.folder), module.go_version, entries]).encode())
    safe = re.sub(r"[^\w.-]", "_", module.path)
    target = work_dir / "modules" / f"{safe}-{key.hexdigest()[:12]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    if (target / "go.mod").is_file():
        return target
    # Built beside and renamed into place, so a run sharing work_dir never sees half a mirror.
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    for name in entries:
        (building / name).symlink_to(module.folder / name)
    (building / "go.mod").write_text(f"module {module.path}\n\ngo {module.go_version}\n", encoding="utf-8")
    try:
        building.rename(target)
    except OSError:  # another run made it first
        shutil.rmtree(building)
    return target


def scratch_go_mod(modules: list[Module], work_dir: Path) -> str:
    """The scratch module's go.mod: every module of the closure required and replaced by its mirror."""
    major, minor = toolchain().version
    lines = [f"module {SCRATCH_MODULE}", "", f"go {major}.{minor}", "", "require ("]
    lines += [f"\t{m.path} {placeholder_version(m.path)}" for m in modules]
    lines += [")", "", "replace ("]
    folders = {m.folder for m in modules}
    lines += [f"\t{m.path} => {json.dumps(str(mirror(m, work_dir, folders - {m.folder})))}" for m in modules]
    return "\n".join([*lines, ")", ""])
