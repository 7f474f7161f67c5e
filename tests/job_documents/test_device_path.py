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


def test_build_document_is_still_importable_from_the_package_root():
    import job_documents

    assert callable(job_documents.build_document)
    assert "build_document" in job_documents.__all__
