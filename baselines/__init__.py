"""Federated and on-device personalisation schemes, each a Flower ServerApp/ClientApp pair."""
