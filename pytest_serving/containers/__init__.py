"""Starting, watching and removing server containers (testcontainers underneath)."""

import os

# Ryuk, testcontainers' reaper, is an image pulled from a registry that air-gapped machines cannot
# reach; this plugin removes its containers itself (see cleanup.py). Set the variable to "false"
# to have Ryuk as well. It must be set before testcontainers is imported.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
