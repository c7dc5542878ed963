"""Schemes: one module per way of personalising the model, each a Flower ServerApp/ClientApp pair.

Importing the package registers them; see `baselines.registry` for the registry and `get_scheme`.
"""
from baselines import central, distill_share, dp_fedavg, fed_mu, fedavg, fedper, fedprox, fedrep, local_ft, mu_ft, secagg_fedavg  # noqa: F401

__all__ = ["central", "distill_share", "dp_fedavg", "fed_mu", "fedavg", "fedper", "fedprox", "fedrep", "local_ft", "mu_ft", "secagg_fedavg"]
