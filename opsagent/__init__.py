"""opsagent: PostgreSQL schema management for servers reached only over SSH."""

__version__ = "0.1.0"
