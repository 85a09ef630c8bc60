"""Every registered learner passes every shared check."""

import pytest

from checks.learner_checks import ALL_CHECKS
from liverec.models import REGISTRY


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_learner_conformance(name, check):
    check(REGISTRY[name]())
