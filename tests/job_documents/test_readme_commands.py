"""The README's stand-alone document commands run as written.

The block under "Job documents can also be built and checked on their own" is typed by
newcomers verbatim; each command in it must exit 0, in order, in an empty directory.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEADING = "Job documents can also be built and checked on their own:"


def _readme_document_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    after = text[text.index(HEADING) :]
    block = re.search(r"```sh\n(.*?)```", after, re.DOTALL)
    assert block is not None, "the README lost its document commands block"
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


def test_the_readme_document_commands_run_as_written(tmp_path: Path) -> None:
    commands = _readme_document_commands()
    assert any(c.startswith("ca-migrate document build") for c in commands)
    assert any(c.startswith("ca-migrate document validate") for c in commands)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    for command in commands:
        done = subprocess.run(
            shlex.split(command),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr
