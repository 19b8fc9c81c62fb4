"""The checks, in report order. A new check is one module with `NAME` and `run(data) -> Finding`,
plus one entry here."""
from tunesmith.audit.checks import (class_balance, duplicates, empty_text, encoding, label_conflicts, label_noise,
                                    leakage, near_duplicates, pii, truncation)

CHECKS = {m.NAME: m.run for m in (empty_text, duplicates, near_duplicates, label_conflicts, leakage, class_balance,
                                  truncation, label_noise, encoding, pii)}
