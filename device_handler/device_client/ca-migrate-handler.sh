#!/bin/sh
# AWS IoT Device Client job handler for ca-migration/1 documents.
# Device Client runs it with the job document's "args"; see docs/device-handler.md.
# PYTHON may name the interpreter that has ca-migrate installed (default: python3).
exec "${PYTHON:-python3}" -m device_handler.device_client.handler "$@"
