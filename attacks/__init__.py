"""A curious server that reconstructs patients from what each scheme sent (the wire ledger only)."""
