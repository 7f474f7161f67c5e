"""Reading a campaign file: bounded, UTF-8 only, every refusal located.

A campaign file may come from anywhere: at most `MAX_FILE_BYTES` are read, and a
UTF-16/32 byte-order mark or a byte that is not UTF-8 is reported with its line
(docs/orchestrator.md, "Campaign file limits"). `orchestrator.spec` validates the text.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Final

from orchestrator.errors import SpecError, SpecProblem

__all__ = ["MAX_FILE_BYTES", "read_campaign_text", "too_large"]

#: A campaign file is a few kilobytes; anything past 1 MiB is refused unread.
MAX_FILE_BYTES: Final = 1024 * 1024


def too_large(size: int, unit: str) -> str:
    return (
        f"the file is over {MAX_FILE_BYTES:,} {unit} ({size:,} or more); a campaign file is "
        "a few kilobytes: check that this is the right file"
    )


_WIDE_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _decode(raw: bytes, source: str) -> str:
    for bom, name in _WIDE_BOMS:
        if raw.startswith(bom):
            raise SpecError(
                source,
                (
                    SpecProblem(
                        "",
                        f"the file is {name} text (it starts with a {name} byte-order mark); "
                        "save it as UTF-8",
                        line=1,
                        column=1,
                    ),
                ),
            )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        raise SpecError(
            source,
            (
                SpecProblem(
                    "",
                    f"byte 0x{raw[exc.start]:02x} is not UTF-8 text; save the file as UTF-8",
                    line=raw.count(b"\n", 0, exc.start) + 1,
                    column=exc.start - line_start + 1,
                ),
            ),
        ) from None


def read_campaign_text(path: Path) -> str:
    """A campaign file's text: at most `MAX_FILE_BYTES` read, UTF-8 (BOM tolerated)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError(
            str(path), (SpecProblem("", f"cannot read the file: {exc.strerror}"),)
        ) from exc
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError(str(path), (SpecProblem("", too_large(len(raw), "bytes")),))
    return _decode(raw, str(path))
