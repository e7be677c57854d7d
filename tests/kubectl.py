"""kubectl for test set-up: the tool people use, so the tests apply YAML the same way.

scripts/build-binaries.sh finds it (PATH, or the cached build of ours).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Iterable

import yaml

ROOT = Path(__file__).resolve().parents[1]


def kubectl_binary() -> str | None:
    found = subprocess.run(["bash", str(ROOT / "scripts/build-binaries.sh"), "path", "kubectl"],
                           capture_output=True, text=True, check=False)
    path = found.stdout.strip()
    return path if found.returncode == 0 and path else None


def kubectl(kubeconfig: str | Path, *args: str, input: str | None = None) -> str:
    """Run kubectl against ``kubeconfig``; AssertionError with its output when it fails."""
    binary = kubectl_binary()
    if binary is None:
        raise AssertionError("no kubectl: bash scripts/build-binaries.sh kube-node")
    proc = subprocess.run([binary, "--kubeconfig", str(kubeconfig), *args], input=input,
                          capture_output=True, text=True, timeout=180, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc.stdout


def apply_crds(kubeconfig: str | Path) -> None:
    """crds/ applied and established, as the README tells people."""
    kubectl(kubeconfig, "apply", "-f", str(ROOT / "crds"))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds"))


def apply_documents(kubeconfig: str | Path, docs: Iterable[dict[str, Any]]) -> None:
    kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump_all(list(docs)))


def documents(*paths: Path) -> list[dict[str, Any]]:
    """The YAML documents of files and folders, in name order (to apply a chosen part of manifests/)."""
    out: list[dict[str, Any]] = []
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
        for file in files:
            out += [d for d in yaml.safe_load_all(file.read_text()) if isinstance(d, dict) and d.get("kind")]
    return out
