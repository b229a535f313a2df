"""The toy policy's params, initialised once per module."""

import jax
import pytest

from reasonjax.models import transformer
from rl_helpers import CFG


@pytest.fixture(scope="module")
def init_params():
    return transformer.init_params(CFG, jax.random.key(3))
