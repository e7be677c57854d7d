"""provisioner.f5ltm: publish services on an F5 BIG-IP LTM (config section ``lb.f5ltm``)."""

from extensions.provisioners.f5ltm.client import BigIPClient, BigIPError, BigIPUnreachable
from extensions.provisioners.f5ltm.config import F5Config
from extensions.provisioners.f5ltm.names import legacy_object_name, object_name
from extensions.provisioners.f5ltm.provisioner import F5Provisioner

__all__ = ["BigIPClient", "BigIPError", "BigIPUnreachable", "F5Config", "F5Provisioner", "legacy_object_name",
           "object_name"]
