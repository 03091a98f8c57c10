"""The agent's process never imports the ``kubernetes`` client package (~8 MiB resident: see
controller.cli.main.kubernetes_client_hidden); checked in a fresh interpreter, through the same
entry as ``stockade agent``."""

from __future__ import annotations

import subprocess
import sys

import pytest

IMPORTED = "sorted(n for n, m in sys.modules.items() if n.split('.')[0] == 'kubernetes' and m is not None)"

# `stockade agent` with a --listen it refuses: the agent's modules (and kopf) are imported, then
# the flags are checked and it exits 2 before connecting anywhere.
THROUGH_THE_CLI = (
    "import io, sys\n"
    "from controller.cli.main import main\n"
    "out, err = io.StringIO(), io.StringIO()\n"
    "assert main(['agent', '--node', 'n1', '--listen', 'nowhere'], stdout=out, stderr=err) == 2\n"
    "assert 'kopf' in sys.modules and 'controller.agent.operator' in sys.modules\n"
)
# The same modules imported directly: kopf pulls the client in whenever it is installed.
DIRECTLY = "import sys\nimport controller.agent.main\n"


@pytest.mark.parametrize(
    ("code", "imported"),
    [
        pytest.param(THROUGH_THE_CLI, False, id="stockade agent: not imported"),
        pytest.param(DIRECTLY, True, id="without the guard kopf imports it"),
    ],
)
def test_the_agent_entry_keeps_the_kubernetes_client_out(code: str, imported: bool) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"{code}print({IMPORTED})\n"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    modules = result.stdout.strip()
    assert (modules != "[]") is imported, modules


def test_the_package_can_still_be_imported_after_the_agent_was() -> None:
    """The guard is lifted once the agent's modules are in (a test process may need the client)."""
    code = (
        "from controller.cli.main import kubernetes_client_hidden\n"
        "with kubernetes_client_hidden():\n"
        "    import controller.agent.main\n"
        "import kubernetes.client\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
