"""Helpers for the chart's tests: run the pinned helm and kubectl, render the chart, find objects."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.lab.preflight import tools_bin

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/stockade"
Obj = dict[str, Any]


def tool(name: str) -> Path:
    return tools_bin() / name


def helm(*args: str, values: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [str(tool("helm")), *args] + (["-f", str(values)] if values else [])
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if check:
        assert out.returncode == 0, f"helm {' '.join(args)}: {out.stderr}"
    return out


def render(tmp: Path, values: Obj, *, release: str = "stk", namespace: str = "stockade-system") -> list[Obj]:
    file = tmp / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    out = helm("template", release, str(CHART), "--namespace", namespace, values=file)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} rendered"
    return found[0]


def kinds(objs: list[Obj]) -> list[str]:
    return sorted(o["kind"] for o in objs)


def cleanup_daemonset(objs: list[Obj]) -> Obj:
    cm = find(objs, "ConfigMap")
    doc: Obj = yaml.safe_load(cm["data"]["cleanup-daemonset.yaml"])
    return doc
