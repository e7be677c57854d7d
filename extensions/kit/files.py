"""Atomic file writes for extensions that keep state in files (e.g. the IP pool's ``db_file``).

The helper itself lives in ``controller/files.py`` because the core writes
its entries file with it too, and the core may not import extensions.
"""

from controller.files import write_atomic

__all__ = ["write_atomic"]
