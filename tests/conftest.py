"""Suite-wide: the skip policy (tests/skip_policy.py), pytester, and hypothesis profiles."""

import os

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
