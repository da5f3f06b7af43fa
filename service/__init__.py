"""feedjobs: the gateway and the core shared by gateway and consumer."""

import importlib.metadata

try:
    __version__ = importlib.metadata.version("feedjobs")
except importlib.metadata.PackageNotFoundError:  # a tree that was never installed
    __version__ = "unknown"
