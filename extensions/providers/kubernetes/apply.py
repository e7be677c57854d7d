"""Apply YAML manifests (CRDs, RBAC, ...) with server-side apply.

There is no kubectl on a fresh machine here, so the scripts and the tests
apply ``crds/`` and ``manifests/`` with this small helper instead:

    python -m extensions.providers.kubernetes.apply crds [manifests ...]

It uses the blocking Kubernetes client; it is a command-line and test-setup
tool, never called from the event loop.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

FIELD_MANAGER = "interlook"


def load_documents(paths: Iterable[str | Path]) -> Iterator[dict[str, Any]]:
    """Every non-empty YAML document of the given files and folders, in name order."""
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
        for file in files:
            for doc in yaml.safe_load_all(file.read_text()):
                if isinstance(doc, dict) and doc.get("kind"):
                    yield doc


def apply_documents(api_client: Any, docs: Iterable[dict[str, Any]], *, namespace: str | None = None) -> list[str]:
    """Server-side apply each document; wait for CRDs to be established. Returns `kind/name` applied."""
    from kubernetes.dynamic import DynamicClient

    dynamic = DynamicClient(api_client)
    applied: list[str] = []
    for doc in docs:
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        meta = doc.get("metadata") or {}
        ns = meta.get("namespace") or (namespace if resource.namespaced else None)
        resource.server_side_apply(body=doc, name=meta["name"], namespace=ns,
                                   field_manager=FIELD_MANAGER, force_conflicts=True)
        if doc.get("status") and "status" in resource.subresources:
            # Only for stand-ins of what a kubelet would report (examples/, tests).
            resource.subresources["status"].patch(body={"status": doc["status"]}, name=meta["name"], namespace=ns,
                                                  content_type="application/merge-patch+json")
        applied.append(f"{doc['kind']}/{meta['name']}")
        if doc["kind"] == "CustomResourceDefinition":
            _wait_established(resource, meta["name"])
    return applied


def _wait_established(resource: Any, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        crd = resource.get(name=name).to_dict()
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise TimeoutError(f"CRD {name} not established after {timeout:g}s")


def main(argv: list[str]) -> int:
    from kubernetes import config

    if not argv:
        print("usage: python -m extensions.providers.kubernetes.apply PATH...", file=sys.stderr)
        return 2
    api_client = config.new_client_from_config()
    for name in apply_documents(api_client, load_documents(argv)):
        print(f"applied {name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
