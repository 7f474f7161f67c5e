"""Suite-wide plugins: the skip policy (tests/skip_policy.py) and pytester for testing it."""

pytest_plugins = ["pytester", "tests.skip_policy"]
