"""provisioner.consul: DNS names of published services, as Consul external nodes.

Config section ``dns.consul`` (the Go program's path).  See docs/consul.md.
"""

from extensions.provisioners.consul.config import ConsulConfig
from extensions.provisioners.consul.provisioner import ConsulProvisioner

__all__ = ["ConsulConfig", "ConsulProvisioner"]
