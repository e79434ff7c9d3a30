"""Versioned migrations: files, the ledger, sync, hazard lint, rollback and the audit log."""
