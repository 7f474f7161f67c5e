"""The runner's Lambda zip: contents, determinism, the handler's package, exclusions.

These build with `--no-deps` (ca-migrate's own packages only): installing the dependencies for
the Lambda platform needs the package index, which the test suite does not rely on. The full
build is `python -m infra.aws.package_lambda` (see docs/runbook.md).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from infra.aws import package_lambda
from infra.aws.cfn import load_template

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> package_lambda.BuildResult:
    out = tmp_path_factory.mktemp("zip") / "runner.zip"
    return package_lambda.build_zip(out, with_dependencies=False)


def test_zip_holds_the_runners_packages_and_data_and_nothing_else(built):
    with zipfile.ZipFile(built.path) as archive:
        names = set(archive.namelist())
    assert "orchestrator/__init__.py" in names
    assert "orchestrator/runner_lambda.py" in names
    assert "job_documents/__init__.py" in names
    assert any(n.startswith("job_documents/") and n.endswith(".pem") for n in names)
    assert any(n.startswith("job_documents/schema/") for n in names)
    assert {n.split("/")[0] for n in names} == {"job_documents", "orchestrator"}
    left_out = ("orchestrator/cli/", "orchestrator/demo/", "orchestrator/testing.py")
    assert not [n for n in names if n.startswith(left_out) or n == "job_documents/testing.py"]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert built.entries == len(names)


def test_everything_the_runner_imports_comes_from_the_zip(built):
    """The handler's module and those it imports when invoked, loaded with the zip first on
    sys.path: every module of ours must come from the zip (none left out that it needs)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import importlib\n"
        "for name in ('orchestrator.runner_lambda', 'orchestrator.aws.dynamodb',\n"
        "             'orchestrator.aws.iot', 'orchestrator.jobdocs', 'job_documents.builder'):\n"
        "    importlib.import_module(name)\n"
        "ours = [m for m in list(sys.modules.values()) if getattr(m, '__name__', '')\n"
        "        .split('.')[0] in ('orchestrator', 'job_documents', 'device_handler', 'infra')]\n"
        "outside = [m.__name__ for m in ours if not (m.__file__ or '').startswith(sys.argv[1])]\n"
        "print(len(ours), outside)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(built.path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    count, outside = result.stdout.split(" ", 1)
    assert int(count) > 20
    assert outside.strip() == "[]"


def test_zip_is_reproducible(built, tmp_path):
    again = package_lambda.build_zip(tmp_path / "again.zip", with_dependencies=False)
    assert again.sha256 == built.sha256
    assert again.path.read_bytes() == built.path.read_bytes()


def test_zip_entries_have_fixed_time_and_regular_modes(built):
    with zipfile.ZipFile(built.path) as archive:
        for info in archive.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert (info.external_attr >> 16) & 0o777 in (0o644, 0o755)


def test_packages_import_from_the_zip_alone(built):
    """With no site-packages at all, the zip on sys.path provides ca-migrate's package."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import orchestrator;"
        "print(orchestrator.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(built.path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip().startswith(str(built.path))


def test_handler_named_in_runner_template_lives_in_the_project():
    tpl = load_template(ROOT / "infra" / "aws" / "runner.yaml")
    handler = tpl["Resources"]["RunnerFunction"]["Properties"]["Handler"]
    assert handler == package_lambda.HANDLER
    module = handler.rpartition(".")[0]
    path = ROOT / Path(*module.split(".")).with_suffix(".py")
    assert path.is_file(), f"the runner template names {handler}, but {path} does not exist"
    assert f"def {handler.rpartition('.')[2]}(" in path.read_text()


def _names(requirements: list[str]) -> set[str]:
    return {
        r.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower()
        for r in requirements
    }


def test_the_zip_takes_the_runners_dependencies_only():
    requirements = package_lambda.runtime_requirements()
    assert _names(requirements) == {
        "structlog",
        "jsonschema",
        "cryptography",
        "boto3",
        "pydantic",
        "pyyaml",
    }
    assert not [r for r in requirements if "extra" in r or ";" in r]
    with_cli = package_lambda.runtime_requirements(excludes=())
    assert {"typer", "rich"} <= _names(with_cli)
    assert not {"awsiotsdk", "paho-mqtt", "greenlet", "ca-migrate"} & _names(with_cli)


def test_output_is_not_touched_when_the_build_fails(tmp_path, monkeypatch):
    target = tmp_path / "runner.zip"
    target.write_bytes(b"previous build")
    monkeypatch.setattr(package_lambda, "LAMBDA_UNZIPPED_LIMIT", 10)
    with pytest.raises(package_lambda.PackagingError, match="250 MB"):
        package_lambda.build_zip(target, with_dependencies=False)
    assert target.read_bytes() == b"previous build"
    assert [p.name for p in tmp_path.iterdir()] == ["runner.zip"]


def test_cli_rejects_an_unknown_architecture(capsys):
    with pytest.raises(SystemExit) as exit_info:
        package_lambda.main(["--architecture", "sparc", "--no-deps"])
    assert exit_info.value.code == 2
    assert "sparc" in capsys.readouterr().err


def test_cli_rejects_a_python_version_that_is_not_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        package_lambda.main(["--python-version", "python3.13", "--no-deps"])
    assert exit_info.value.code == 2
    assert "'python3.13' is not a CPython version" in capsys.readouterr().err


def test_cli_builds_and_reports_the_hash(tmp_path, capsys):
    out = tmp_path / "dist" / "runner.zip"
    assert package_lambda.main(["--no-deps", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file()
    assert "sha256" in printed
    assert "CodeS3Key=ca-migrate-runner-" in printed
