"""zoo: a model-zoo database and query engine over checkpoint weight sketches."""
from zoo.api import AddResult, Zoo
from zoo.errors import *  # noqa: F401,F403
from zoo.errors import ZooError

__all__ = ["Zoo", "AddResult", "ZooError"]
__version__ = "0.1.0"
