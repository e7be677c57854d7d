"""The worked example of docs/EXTENDING.md: a provider and a provisioner built from its checklist alone."""
