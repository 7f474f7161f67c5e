"""Suite-wide: the skip policy (tests/skip_policy.py), pytester, hypothesis profiles, and structlog
configuration restored after every test."""

import os
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import Phase, settings

pytest_plugins = ["pytester", "tests.skip_policy"]

# `make mutate` runs the property tests once per mutant: no shrinking (a failure is all a
# mutant needs), a fixed seed (the same mutants die on every run), no example database.
settings.register_profile(
    "mutation",
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _structlog_configuration_restored() -> Iterator[None]:
    """A command run in-process configures structlog for its run (a level filter, a renderer);
    restore the configuration after every test so no later test's log capture depends on the
    order tests ran in."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
