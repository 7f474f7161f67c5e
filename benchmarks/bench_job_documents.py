"""Build and validate time of a migrate document with all five Amazon Trust Services roots.

Target: median under 5 ms each on the reference machine (2 cores). "warm" is the
steady state of an orchestrator building many documents from the same roots
(parsed roots are remembered); "cold" clears that memory before every run, as a
device validating its one document sees it.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import peak_rss_mib, write_result

from job_documents import (
    Endpoint,
    Operation,
    ValidationPolicy,
    build_document,
    load_catalog,
    validate_document,
)
from job_documents._pem import _inspect
from job_documents.testing import make_signing_key

RUNS = 400
TARGET_MS = 5.0
HOST = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"


def median_ms(action: Callable[[], object], *, cold: bool = False, runs: int = RUNS) -> float:
    samples = []
    for _ in range(runs):
        if cold:
            _inspect.cache_clear()
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return round(statistics.median(samples) * 1000, 3)


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    catalog = load_catalog()
    key = make_signing_key("Ed25519")

    def build(sign: bool = False) -> str:
        return build_document(
            operation=Operation.MIGRATE,
            region="us-east-1",
            campaign="ats-2026",
            wave="canary",
            endpoint=Endpoint(HOST),
            roots=catalog.roots,
            catalog=catalog,
            sign_key=key if sign else None,
        ).text

    text = build()
    signed = build(sign=True)
    verify = ValidationPolicy(region="us-east-1", catalog=catalog, verify_key=key.public_key())
    plain = ValidationPolicy(region="us-east-1", catalog=catalog)
    for _ in range(20):  # warm-up: imports, compiled patterns, schema validators
        build()
        validate_document(text, plain)

    figures = {
        "roots": len(catalog.roots),
        "document_chars": len(text),
        "signed_document_chars": len(signed),
        "aws_limit_chars": 32_768,
        "runs": RUNS,
        "build_median_ms": median_ms(build),
        "build_cold_median_ms": median_ms(build, cold=True),
        "build_signed_median_ms": median_ms(lambda: build(sign=True)),
        "validate_median_ms": median_ms(lambda: validate_document(text, plain)),
        "validate_cold_median_ms": median_ms(lambda: validate_document(text, plain), cold=True),
        "validate_signed_median_ms": median_ms(lambda: validate_document(signed, verify)),
        "target_ms": TARGET_MS,
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    keys = (
        "build_median_ms",
        "build_cold_median_ms",
        "validate_median_ms",
        "validate_cold_median_ms",
    )
    figures["within_target"] = all(figures[k] < TARGET_MS for k in keys)
    write_result("job_documents", figures)


if __name__ == "__main__":
    main()
