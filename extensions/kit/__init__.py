"""The kit: helpers every extension may import, in one place.

An extension may know the message types (``controller/messages.py``), the
config reader (``controller/config.py``), the extension contract
(``controller/extension.py``), the status view (``controller/status.py``) and
this kit, nothing else of the program.  What two extensions need alike
lives here, not in one of them and not in the core:

* ``files``: atomic file writes (a crash leaves the old content or the new);
* ``orphans``: the periodic sweep of records whose entry no longer exists;
* ``ownership``: the marks (instance, entry) every record outside the Service carries.
"""
