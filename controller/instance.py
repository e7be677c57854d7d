"""Which Interlook this is: the instance id every record outside the Service carries.

Several Interlooks share the things they configure: the replicas of one
Deployment, one Interlook per cluster against one Consul or F5 partition, one
per team with its own namespaces and pool.  Each record Interlook makes is
marked with the instance that made it (external-dns calls it the owner id), so
that no instance ever changes or removes another's.

The id is ``core.instanceId`` when configured.  Otherwise it is derived at
start-up from what cannot collide in those setups without any configuration:
the cluster's own id (the ``kube-system`` namespace UID, the Swarm cluster ID)
and the instance's scope (namespaces, label selector, annotation prefix).
Replicas of one Deployment share both, so they share the id; two clusters, or
two scopes in one cluster, get different ones.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Sequence

# Short and plain, because it travels inside Kemp nicknames, F5 descriptions
# and Kubernetes label values: lower-case letters, digits and '-'.
MAX_LENGTH = 32
_VALID = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
DERIVED_PREFIX = "il-"


def instance_id_problem(text: str) -> str:
    """Why ``text`` cannot be an instance id; empty when it can."""
    if len(text) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters, got {len(text)}"
    if not _VALID.match(text):
        return "must be lower-case letters, digits and '-', starting and ending with a letter or digit"
    return ""


@dataclass(frozen=True)
class ClusterIdentity:
    """What a provider knows of where it runs: the platform's own id, and what this instance watches."""

    platform: str      # "kubernetes", "swarm"
    cluster_id: str    # kube-system UID, Swarm cluster ID
    scope: str         # a stable text of the provider's scope (namespaces, selector...)


def derive_instance_id(identities: Sequence[ClusterIdentity]) -> str:
    """A stable id from the clusters and scopes of the providers (``il-`` and 10 hex digits)."""
    text = "|".join(f"{i.platform}:{i.cluster_id}:{i.scope}" for i in sorted(identities, key=lambda i: i.platform))
    return DERIVED_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass
class Identity:
    """The instance id, shared by the core and every extension; settled once at start-up.

    Extensions read ``instance_id`` in ``setup()`` or later: the program
    resolves it before it starts any extension.
    """

    configured: str = ""
    instance_id: str = ""
    source: str = ""

    def resolve(self, identities: Sequence[ClusterIdentity]) -> str:
        if self.configured:
            self.instance_id, self.source = self.configured, "core.instanceId"
        elif identities:
            self.instance_id = derive_instance_id(identities)
            self.source = "derived from " + ", ".join(
                f"{i.platform} cluster {i.cluster_id} with scope {i.scope or '(everything)'}" for i in identities)
        else:
            # No provider can say where it runs (a test double): a fixed id
            # is honest here, there is no cluster to tell apart.
            self.instance_id, self.source = DERIVED_PREFIX + "standalone", "no cluster id available"
        return self.instance_id

    def describe(self) -> str:
        """For check-config: what the id will be, before anything is contacted."""
        if self.configured:
            return f"{self.configured} (core.instanceId)"
        return ("derived at start-up from the cluster id (kube-system namespace UID, or the Swarm cluster ID) "
                "and this instance's scope; set core.instanceId to choose it")
