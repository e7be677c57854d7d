"""provisioner.ipalloc: the built-in IP pool (config section ``ipam.ipalloc``)."""

from extensions.provisioners.ipalloc.config import IPAllocConfig
from extensions.provisioners.ipalloc.provisioner import IPAllocProvisioner
from extensions.provisioners.ipalloc.store import AllocationStore, FileStore, MemoryStore

__all__ = ["IPAllocConfig", "IPAllocProvisioner", "AllocationStore", "FileStore", "MemoryStore"]
