"""provisioner.kemplm: publish services as Virtual Services on a Kemp LoadMaster (config ``lb.kemplm``)."""

from extensions.provisioners.kemplm.config import KempConfig
from extensions.provisioners.kemplm.provisioner import KempProvisioner

__all__ = ["KempConfig", "KempProvisioner"]
