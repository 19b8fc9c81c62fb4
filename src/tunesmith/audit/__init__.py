"""Data audit: find what would silently ruin a fine-tune (duplicates, leakage, conflicts, truncation,
label noise, ...) before training, with row numbers and a fix for each."""
from tunesmith.audit.runner import AuditReport, audit

__all__ = ["AuditReport", "audit"]
