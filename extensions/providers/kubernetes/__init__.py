"""provider.kubernetes: Services of a Kubernetes cluster, published through the workflow.

The watches live in the kopf layer (controller/main.py); this package holds
the Service contract (contract.py), the config (config.py) and the provider
extension that turns what kopf sees into Messages (provider.py).  See
docs/kubernetes.md.
"""

from extensions.providers.kubernetes.config import KubernetesConfig
from extensions.providers.kubernetes.provider import ClusterView, KubernetesProvider

__all__ = ["KubernetesConfig", "KubernetesProvider", "ClusterView"]
