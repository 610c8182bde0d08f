"""Hypothesis settings for the unit tier.

No per-example deadline: the test machines are small and busy, and a slow
example is not a wrong one.  Under CI (the CI environment variable) Hypothesis
selects its own "ci" profile, which is derandomized; HYPOTHESIS_PROFILE picks
any registered profile explicitly.
"""

import os

from hypothesis import settings

settings.register_profile("unit", deadline=None)
settings.register_profile("thorough", deadline=None, max_examples=2000)

_profile = os.environ.get("HYPOTHESIS_PROFILE")
if _profile:
    settings.load_profile(_profile)
elif not os.environ.get("CI"):
    settings.load_profile("unit")
