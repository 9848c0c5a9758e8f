"""``llama_cpp.llama_types`` under its llama-cpp-python name: everything in :mod:`llamabind.types`."""

from .types import *  # noqa: F403
from .types import __all__ as __all__
