"""mupriv: what on-device µ-Fine-Tuning and federated learning cost in accuracy, bytes and privacy."""

__version__ = "0.1.0"
