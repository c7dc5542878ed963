"""The shared core: TDSSM model, training phases, metrics and device cost. Imports nothing from baselines, attacks or the CLI."""
