"""The cluster lab: a real Kubernetes control plane and real nodes (kubelet + containerd), each
node in its own network and mount namespace.

See tests/cluster/README.md. Entry points: `Lab` (tests, demo) and `python -m tests.cluster.lab`.
"""

from .config import LabConfig
from .lab import Lab
from .preflight import LabError

__all__ = ["Lab", "LabConfig", "LabError"]
