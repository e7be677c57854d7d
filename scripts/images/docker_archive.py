"""Wrap one layer (a rootfs tarball) into an image archive that loads anywhere.

No registry is reachable here, so the node's images are made locally.  The
output is the docker-archive format (``manifest.json`` + config + layer), which
both ``docker load`` and ``ctr images import`` read:

    python3 docker_archive.py LAYER.tar NAME:TAG OUT.tar [--entrypoint JSON] [--cmd JSON] [--env K=V]...

Standard library only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
import time
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_archive(layer: Path, name: str, out: Path, entrypoint: list[str] | None,
                  cmd: list[str] | None, env: list[str]) -> None:
    diff_id = sha256_of(layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(0)),
        "config": {"Env": env, **({"Entrypoint": entrypoint} if entrypoint else {}),
                   **({"Cmd": cmd} if cmd else {})},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created_by": "scripts/images/docker_archive.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [name], "Layers": [f"{diff_id}/layer.tar"]}]
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as archive:
        for member, data in ((config_name, config_bytes), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        archive.add(layer, arcname=f"{diff_id}/layer.tar")
    tmp.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layer", type=Path)
    parser.add_argument("name")
    parser.add_argument("out", type=Path)
    parser.add_argument("--entrypoint", type=json.loads)
    parser.add_argument("--cmd", type=json.loads)
    parser.add_argument("--env", action="append", default=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    args = parser.parse_args()
    write_archive(args.layer, args.name, args.out, args.entrypoint, args.cmd, args.env)


if __name__ == "__main__":
    main()
