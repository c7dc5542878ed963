"""Client failures in a report: which schemes lost devices, in which rounds, and why.

A federation goes on when a device fails, so a scheme's numbers can silently describe fewer devices, or,
when every device failed every round, the pretrained model itself (Δ +0.000 that means "nothing ran",
not "nothing changed"). The report therefore marks such schemes wherever they appear and lists every
failure. Counts come from results.csv (``failed_rounds`` and ``rounds`` per client), reasons from
failures.csv.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from simulator.report.document import Block, Heading, Para, Table
from simulator.report.load import RunData
from simulator.report.tables import ALL_CLIENTS, sorted_schemes

MAX_ROWS = 60  # failures listed in the report; failures.csv has them all
WARN = "⚠"


@dataclass(frozen=True)
class SchemeFailures:
    scheme: str
    clients: int  # (seed, client) pairs the scheme ran on
    failed: int  # of them, how many failed in at least one round
    every_round: bool  # every device failed in every round it was asked to take part in

    @property
    def label(self) -> str:
        if self.every_round:
            return f"{WARN} every round failed"
        return f"{WARN} {self.failed}/{self.clients} clients failed"

    @property
    def sentence(self) -> str:
        if self.every_round:
            return (f"{self.scheme}: every client failed in every round, so no device's training reached a result: "
                    f"its numbers are the starting model's, or missing (—); a Δ of +0.000 means nothing ran, not that "
                    f"nothing changed.")
        return (f"{self.scheme}: {self.failed} of {self.clients} clients (over seeds) failed in at least one round; its "
                f"numbers describe fewer devices or fewer rounds than configured.")


def scheme_failures(run: RunData) -> dict[str, SchemeFailures]:
    """Per scheme that had any client failure: how many clients failed, and whether every round failed."""
    res = run.results
    res = res[(res["client"] != ALL_CLIENTS) & res["metric"].isin(["failed_rounds", "rounds"])]
    out: dict[str, SchemeFailures] = {}
    if not res.empty:
        wide = res.pivot_table(index=["scheme", "seed", "client"], columns="metric", values="value", aggfunc="max")
        if "failed_rounds" in wide.columns:
            rounds = wide["rounds"] if "rounds" in wide.columns else pd.Series(0.0, index=wide.index)
            for scheme, grp in wide.groupby(level="scheme"):
                failed = grp["failed_rounds"].fillna(0) > 0
                if failed.any():
                    every = bool((grp["failed_rounds"].fillna(0) >= rounds.loc[grp.index].fillna(0).clip(lower=1)).all())
                    out[scheme] = SchemeFailures(scheme, len(grp), int(failed.sum()), every)
    if run.failures is not None:  # e.g. a device that left no final model without an error reply
        for scheme, grp in run.failures.groupby("scheme"):
            if scheme not in out:
                n = int(res[res["scheme"] == scheme][["seed", "client"]].drop_duplicates().shape[0]) or len(grp)
                out[scheme] = SchemeFailures(scheme, n, int(grp[["seed", "client"]].drop_duplicates().shape[0]), False)
    return {s: out[s] for s in sorted_schemes(out)}


def failure_blocks(run: RunData, failures: dict[str, SchemeFailures]) -> list[Block]:
    """The report's "Client failures" section: one loud sentence per scheme, then the failures themselves."""
    if not failures:
        return []
    blocks: list[Block] = [Heading("Client failures"), *(Para(f"{WARN} {f.sentence}") for f in failures.values())]
    if run.failures is not None and not run.failures.empty:
        frame = run.failures
        rows = [[str(r.seed), r.scheme, r.client, str(r.round) or "—", str(r.error)]
                for r in frame.head(MAX_ROWS).itertuples(index=False)]
        more = f" The first {MAX_ROWS} of {len(frame)} are shown; failures.csv has them all." if len(frame) > MAX_ROWS else ""
        blocks.append(Table(["seed", "scheme", "client", "round", "error"], rows,
                            caption="Every error reply the server got, by round (the ledger's rounds: 0 = the first "
                                    "full download, then the training rounds, then the final model)." + more))
    return blocks
