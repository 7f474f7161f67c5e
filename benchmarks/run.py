"""Run every benchmarks/bench_*.py in its own process (so memory figures are its own).

Usage: python benchmarks/run.py [NAME ...]   (names without the bench_ prefix)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        wanted = {f"bench_{name}.py" for name in argv}
        scripts = [s for s in scripts if s.name in wanted]
    failed = []
    for script in scripts:
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        if rc != 0:
            failed.append(script.name)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"results in {HERE / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
