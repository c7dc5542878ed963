"""Injected client failures (`[federation] fail`): chosen devices raise in chosen rounds.

A real federation loses devices mid-round; mupriv must then report the failure, not a silently smaller
result. This makes the failure path reproducible on every scheme and engine: the scheme's ClientApp is
wrapped so that a chosen device raises when a message of a chosen round reaches it, exactly as a crashed
device would (the engine turns it into an error reply, the ledger records it, the round goes on).

Rounds are the ledger's: 0 is the one full download of schemes that share part of the model, 1..R the
training rounds (on-device schemes and ``central`` have one), and the final model delivery is round R+1
(``secagg-fedavg`` delivers it in round R). ``*`` is every training round, 1..R, but not the final
delivery: a device whose training always crashed but which still receives the final model.
"""
from __future__ import annotations

from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from simulator.ledger import round_of

EVERY_ROUND = "*"


class InjectedFailure(RuntimeError):
    """What a device raises where `[federation] fail` says it fails."""


def should_fail(faults: dict[str, list[Any]], partition: int, message: Message) -> bool:
    """Whether the device of ``partition`` fails on ``message`` under ``faults`` (partition -> rounds)."""
    rounds = faults.get(str(partition))
    if not rounds:
        return False
    rnd = round_of(message)
    if EVERY_ROUND in rounds and rnd is not None and rnd >= 1 and not message.metadata.message_type.startswith("evaluate"):
        return True
    return rnd in rounds


class FaultyClientApp(ClientApp):
    """A scheme's ClientApp, except that the chosen devices raise in the chosen rounds."""

    def __init__(self, inner: ClientApp, faults: dict[str, list[Any]]) -> None:
        super().__init__()
        self.inner = inner
        self.faults = {str(k): list(v) for k, v in faults.items()}

    def __call__(self, message: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        if should_fail(self.faults, partition, message):
            raise InjectedFailure(f"injected failure (federation.fail) in round {round_of(message)}")
        return self.inner(message, context)


def with_faults(apps: tuple[Any, ClientApp], faults: dict[str, list[Any]]) -> tuple[Any, ClientApp]:
    """(server, client) with the client wrapped when any device is to fail; unchanged otherwise."""
    server, client = apps
    return (server, FaultyClientApp(client, faults)) if faults else (server, client)
