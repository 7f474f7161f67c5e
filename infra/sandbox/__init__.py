"""A local stand-in for AWS IoT Jobs: control plane over HTTP, data plane over MQTT and HTTPS.

See docs/sandbox.md. Request signatures are accepted without being checked.
"""
