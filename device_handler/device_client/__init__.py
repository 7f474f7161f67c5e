"""Integration with AWS IoT Device Client: a handler its jobs feature can run.

`ca-migrate-handler.sh` (beside this file) is what a Device Client job
document names; it runs `python -m device_handler.device_client.handler`.
"""
