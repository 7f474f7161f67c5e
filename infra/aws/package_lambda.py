"""Build the unattended runner's Lambda deployment zip from the installed distribution.

    python -m infra.aws.package_lambda --output dist/ca-migrate-runner.zip

The zip holds only what the runner imports: ca-migrate's `job_documents` and `orchestrator`
(without the operator's CLI, the demo and the test kits), copied from where this interpreter
imports them (an editable checkout or an installed wheel), and the runtime dependencies of
the package and its `[orchestrator]` extra minus the CLI's (typer, rich), installed with
`pip install --target` as wheels for the Lambda platform (manylinux, the CPython of the
function's runtime, `PYTHON_VERSION` unless `--python-version` says otherwise; x86_64 or
arm64), so it can be built on any machine. The device handler, the sandbox and the
CloudFormation templates are not in it.

Invariants:
- The same inputs give the same bytes: entries are sorted and carry a fixed timestamp and
  mode, so an unchanged build does not change the function's code hash.
- The build refuses to write a zip Lambda would reject (over 250 MB unpacked) and says so.
- Nothing is written at `--output` until the whole zip has been built (written beside it,
  then renamed).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_EXCLUDES",
    "DISTRIBUTION",
    "LAMBDA_UNZIPPED_LIMIT",
    "PYTHON_VERSION",
    "RUNNER_EXTRAS",
    "RUNNER_LEAVES_OUT",
    "RUNNER_PACKAGES",
    "BuildResult",
    "PackagingError",
    "build_zip",
    "main",
    "runtime_requirements",
]

DISTRIBUTION = "ca-migrate"
HANDLER = "orchestrator.runner_lambda.handler"
DEFAULT_EXCLUDES = frozenset({"typer", "rich"})
#: The extras whose requirements the runner needs besides the package's own.
RUNNER_EXTRAS = ("orchestrator",)
#: ca-migrate's packages the runner imports, and what of them it never imports.
RUNNER_PACKAGES = ("job_documents", "orchestrator")
RUNNER_LEAVES_OUT = frozenset(
    {"orchestrator/cli", "orchestrator/demo", "orchestrator/testing.py", "job_documents/testing.py"}
)
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
#: The CPython of runner.yaml's `Runtime` (python3.13: deprecated by Lambda on 2029-06-30).
PYTHON_VERSION = "3.13"
_PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")
PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


class PackagingError(RuntimeError):
    """The zip cannot be built; the message says what to change."""


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What was written."""

    path: Path
    sha256: str
    zipped_bytes: int
    unzipped_bytes: int
    entries: int


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(
    excludes: Iterable[str] = DEFAULT_EXCLUDES, extras: Iterable[str] = RUNNER_EXTRAS
) -> list[str]:
    """The distribution's requirements and those of `extras`, minus the excluded names.

    Markers are dropped from what is returned (pip is told the target platform instead);
    the distribution's own extras (`ca-migrate[...]`) are never returned.
    """
    try:
        declared = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise PackagingError(
            f"{DISTRIBUTION} is not installed in {sys.executable}: run `bash scripts/bootstrap.sh`"
            " and use .venv/bin/python"
        ) from exc
    skip = {_normalise(name) for name in excludes} | {_normalise(DISTRIBUTION)}
    wanted = set(extras)
    kept: list[str] = []
    for requirement in declared:
        spec, _, marker = requirement.partition(";")
        extra = _EXTRA.search(marker)
        if extra is not None and extra.group(1) not in wanted:
            continue
        match = _NAME.match(spec)
        if match is None or _normalise(match.group(1)) in skip:
            continue
        requirement_text = spec.strip() if extra is not None else requirement.strip()
        if requirement_text not in kept:
            kept.append(requirement_text)
    return kept


def _runner_packages() -> list[Path]:
    directories: list[Path] = []
    for name in RUNNER_PACKAGES:
        spec = importlib.util.find_spec(name)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            raise PackagingError(f"package {name} of {DISTRIBUTION} cannot be found: reinstall")
        directories.append(Path(locations[0]))
    return directories


def _copy_package(source: Path, target: Path) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        inside = Path(directory).relative_to(source.parent).as_posix()
        return {
            n
            for n in names
            if n in _SKIP_DIRS or n.endswith(_SKIP_SUFFIXES) or f"{inside}/{n}" in RUNNER_LEAVES_OUT
        }

    shutil.copytree(source, target / source.name, ignore=ignore)


def _pip_install(
    requirements: Sequence[str], target: Path, *, architecture: str, python_version: str
) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--target",
        str(target),
        "--platform",
        PLATFORMS[architecture],
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        "--only-binary=:all:",
        *requirements,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PackagingError(
            "pip could not install the runtime dependencies for the Lambda platform "
            f"({PLATFORMS[architecture]}, CPython {python_version}); check network access to "
            f"the package index and that every dependency has a wheel for it:\n{result.stderr}"
        )


def _write_zip(tree: Path, output: Path) -> BuildResult:
    files = sorted(
        p
        for p in tree.rglob("*")
        if p.is_file()
        and not p.name.endswith(_SKIP_SUFFIXES)
        and not _SKIP_DIRS.intersection(p.relative_to(tree).parts)
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    unzipped = 0
    with tempfile.NamedTemporaryFile(
        dir=output.parent, prefix=f".{output.name}.", suffix=".part", delete=False
    ) as handle:
        partial = Path(handle.name)
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                info = zipfile.ZipInfo(path.relative_to(tree).as_posix(), _FIXED_TIME)
                executable = os.access(path, os.X_OK)
                info.external_attr = ((0o755 if executable else 0o644) | 0o100000) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                data = path.read_bytes()
                unzipped += len(data)
                archive.writestr(info, data)
        if unzipped > LAMBDA_UNZIPPED_LIMIT:
            raise PackagingError(
                f"the runner would unpack to {unzipped / 2**20:.0f} MiB, over Lambda's 250 MB "
                "limit: exclude more dependencies (--exclude NAME) or use a container image"
            )
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    return BuildResult(
        path=output,
        sha256=digest,
        zipped_bytes=output.stat().st_size,
        unzipped_bytes=unzipped,
        entries=len(files),
    )


def build_zip(
    output: Path,
    *,
    architecture: str = "x86_64",
    python_version: str = PYTHON_VERSION,
    with_dependencies: bool = True,
    excludes: Iterable[str] = DEFAULT_EXCLUDES,
) -> BuildResult:
    """Build the runner's deployment zip at `output`."""
    if architecture not in PLATFORMS:
        raise PackagingError(f"architecture must be one of {sorted(PLATFORMS)}")
    if not _PYTHON_VERSION.match(python_version):
        raise PackagingError(
            f"--python-version {python_version!r} is not a CPython version such as "
            f"{PYTHON_VERSION!r} (the function's runtime, python{PYTHON_VERSION}, without 'python')"
        )
    packages = _runner_packages()
    with tempfile.TemporaryDirectory(prefix="ca-migrate-lambda-") as scratch:
        tree = Path(scratch) / "package"
        tree.mkdir()
        if with_dependencies:
            _pip_install(
                runtime_requirements(excludes),
                tree,
                architecture=architecture,
                python_version=python_version,
            )
        for package in packages:
            if (tree / package.name).exists():
                raise PackagingError(
                    f"a dependency installed a top-level {package.name!r}, which clashes with "
                    f"{DISTRIBUTION}'s own package: exclude that dependency"
                )
            _copy_package(package, tree)
        return _write_zip(tree, output)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0 ok, 2 bad input, 1 failure)."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.aws.package_lambda",
        description="Build the ca-migrate runner's Lambda zip (handler " + HANDLER + ").",
    )
    parser.add_argument("--output", "-o", type=Path, default=Path("dist/ca-migrate-runner.zip"))
    parser.add_argument("--architecture", choices=sorted(PLATFORMS), default="x86_64")
    parser.add_argument(
        "--python-version",
        default=PYTHON_VERSION,
        help=f"CPython of the function's runtime (default {PYTHON_VERSION}, as runner.yaml)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=None,
        metavar="NAME",
        help="runtime dependency to leave out (repeatable; default: typer, rich)",
    )
    parser.add_argument(
        "--no-deps",
        action="store_true",
        help="only ca-migrate's own packages (for a layer that already holds the dependencies)",
    )
    args = parser.parse_args(argv)
    if not _PYTHON_VERSION.match(args.python_version):
        parser.error(
            f"--python-version {args.python_version!r} is not a CPython version such as "
            f"{PYTHON_VERSION!r}"
        )
    excludes = DEFAULT_EXCLUDES if args.exclude is None else frozenset(args.exclude)
    try:
        result = build_zip(
            args.output,
            architecture=args.architecture,
            python_version=args.python_version,
            with_dependencies=not args.no_deps,
            excludes=excludes,
        )
    except PackagingError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(
        f"{result.path}: {result.entries} files, {result.zipped_bytes / 2**20:.1f} MiB zipped, "
        f"{result.unzipped_bytes / 2**20:.1f} MiB unpacked, sha256 {result.sha256}\n"
        f"upload: aws s3 cp {result.path} s3://BUCKET/ca-migrate-runner-{result.sha256[:12]}.zip\n"
        f"then deploy runner.yaml with CodeS3Key=ca-migrate-runner-{result.sha256[:12]}.zip\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
