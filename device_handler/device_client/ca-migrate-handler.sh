#!/bin/sh
# AWS IoT Device Client job handler for ca-migration/1 documents.
# Device Client runs it with the job document's "args"; see docs/device-handler.md.
# PYTHON may name the interpreter that has ca-migrate installed (default: python3).
# Device Client fails a job on any stderr output: the handler writes its log and its
# report (the last line) on stdout, and 2>&1 keeps even an interpreter that cannot
# start off stderr.
py="${PYTHON:-python3}"
if ! command -v "$py" >/dev/null 2>&1; then
    echo '{"message": "the interpreter '"'$py'"' was not found: set PYTHON to the python that has ca-migrate installed", "reason": "config", "status": "FAILED"}'
    exit 2
fi
exec "$py" -m device_handler.device_client.handler "$@" 2>&1
