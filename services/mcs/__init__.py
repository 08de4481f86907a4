"""MCS, the Mesh Coordination Server: a task queue, signed webhooks and shared memory for AI agents."""

__version__ = "0.1.0"
