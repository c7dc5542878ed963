"""What one client put on the wire and how often it took part, counted from the wire ledger.

Bytes are the serialised Flower messages the ledger recorded at the server's Grid (envelopes included);
`content_bytes_up` and `params_up` are the payload alone. A round counts when the server sent the client a
training message in it; a failed round is one with an error reply from the client.
"""
from __future__ import annotations

import pandas as pd

from simulator.ledger import DOWN, UP


def wire_counts(frame: pd.DataFrame, errors: pd.DataFrame, partition: int) -> dict[str, int]:
    """bytes_up/down, content_bytes_up, params_up, messages_up, rounds and failed_rounds of one partition, from the
    ledger's frame (`WireLedger.to_frame`) and its error replies (`FederationResult.errors`)."""
    mine = frame[frame["partition_id"] == partition]
    up, down = mine[mine["direction"] == UP], mine[mine["direction"] == DOWN]
    return {
        "bytes_up": int(up["bytes"].sum()),
        "bytes_down": int(down["bytes"].sum()),
        "content_bytes_up": int(up["content_bytes"].sum()),
        "params_up": int(up["n_params"].sum()),
        "messages_up": int(len(up)),
        "rounds": int(mine.loc[(mine["direction"] == DOWN) & mine["message_type"].str.startswith("train"), "round"].nunique()),
        "failed_rounds": int(errors.loc[errors["partition_id"] == partition, "round"].nunique()),
    }
