"""The device-side path imports neither pydantic nor the builder."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_validating_a_document_never_imports_pydantic(ats_migrate_text):
    program = textwrap.dedent(
        """
        import sys
        import job_documents
        result = job_documents.validate_document(sys.stdin.read())
        assert result.operation == "migrate", result
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core"))
        print(",".join(loaded) or "none")
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", program],
        input=ats_migrate_text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "none"


def test_build_document_loads_from_the_package_root_on_first_use_and_builds():
    program = textwrap.dedent(
        """
        import sys
        import job_documents
        before = "pydantic" in sys.modules
        build = job_documents.build_document
        import job_documents.builder as builder_module
        assert build is builder_module.build_document, build
        built = build(
            operation="migrate", region="us-east-1", campaign="c1", wave="w1",
            endpoint=job_documents.Endpoint("a1b2c3-ats.iot.us-east-1.amazonaws.com"),
            roots=job_documents.load_catalog().roots[:1],
        )
        result = job_documents.validate_document(built.text)
        print(before, "pydantic" in sys.modules, result.operation, len(result.roots))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1].split() == ["False", "True", "migrate", "1"]
