"""The job document of a Device Client wave: a `runHandler` step that embeds ca-migration/1.

AWS IoT Device Client runs a job whose document follows its own schema
(`"version": "1.0"`, `steps[].action` of type `runHandler`): it executes
`<input.path>/<input.handler> <runAsUser> <input.args...>` and reports
SUCCEEDED when the handler exits 0 with no more stderr lines than
`allowStdErr`, FAILED otherwise. A wave of such devices therefore gets the
ca-migration/1 document as one argument of the handler (`--document-json`),
exactly as `device_handler/device_client/sample-job-document-v1.json` shows;
the handler validates it as the agent would.

Pure: text in, text out. The wrapped document is what goes to CreateJob, so
its size is checked against AWS's limit (escaping the embedded document inside
a JSON string makes it larger than the document alone), and its hash is the
one the job id is derived from.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any, Final

from job_documents import MAX_DOCUMENT_CHARS, BuiltDocument, canonical_json, document_hash
from orchestrator.model import DeviceClientSettings

__all__ = ["HANDLER_STEP", "WrappedTooLargeError", "redacted", "wrap_for_device_client"]

#: The step's name, as Device Client logs it.
HANDLER_STEP: Final = "ca-migrate"
_DOCUMENT_ARG: Final = "--document-json"


class WrappedTooLargeError(ValueError):
    """The runHandler document is over AWS's job document limit."""

    def __init__(self, size: int, inner: int) -> None:
        self.size = size
        super().__init__(
            f"the Device Client job document is {size} characters (the ca-migration/1 "
            f"document inside it is {inner}), over AWS's limit of {MAX_DOCUMENT_CHARS}: "
            "put fewer roots in the campaign's trust.add, or shorten the device_client paths"
        )


def _document(inner: str, settings: DeviceClientSettings) -> dict[str, Any]:
    directory, handler = posixpath.split(settings.handler_path)
    return {
        "version": "1.0",
        "steps": [
            {
                "action": {
                    "name": HANDLER_STEP,
                    "type": "runHandler",
                    "input": {
                        "handler": handler,
                        "args": [
                            "--config",
                            settings.device_toml,
                            "--device-client-config",
                            settings.config_path,
                            _DOCUMENT_ARG,
                            inner,
                        ],
                        "path": directory or "/",
                    },
                    "runAsUser": settings.run_as_user,
                    "allowStdErr": settings.allow_stderr,
                    "ignoreStepFailure": "false",
                }
            }
        ],
    }


def wrap_for_device_client(inner: BuiltDocument, settings: DeviceClientSettings) -> BuiltDocument:
    """The runHandler document that runs the handler on `inner`; `WrappedTooLargeError` if big."""
    document = _document(inner.text, settings)
    text = canonical_json(document).decode("utf-8")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise WrappedTooLargeError(len(text), inner.size)
    return BuiltDocument(
        document=document, text=text, size=len(text), sha256=document_hash(document)
    )


def redacted(document: dict[str, Any], inner: BuiltDocument) -> dict[str, Any]:
    """`document` with the embedded ca-migration/1 text replaced by its size and hash.

    For plans and logs: the embedded document carries PEM bodies, which are never echoed.
    """
    shown: dict[str, Any] = json.loads(json.dumps(document))
    for step in shown.get("steps", []):
        args = step.get("action", {}).get("input", {}).get("args", [])
        for index, arg in enumerate(args[:-1]):
            if arg == _DOCUMENT_ARG:
                args[index + 1] = (
                    f"<ca-migration/1 document: {inner.size} characters, sha256 {inner.sha256}>"
                )
    return shown
