"""The cluster lab: a real Kubernetes control plane with nodes and pods as network namespaces.

See tests/cluster/README.md. Entry points: `Lab` (tests, demo) and `python -m tests.cluster.lab`.
"""

from .config import LabConfig
from .lab import Lab
from .preflight import LabError

__all__ = ["Lab", "LabConfig", "LabError"]
