"""Cross-round disaggregation of SecAgg aggregates (Lam et al. 2021, "Gradient Disaggregation").

Under SecAgg+ the server learns only each round's aggregate of the clients it sampled, but it knows
whom it sampled: it addressed every protocol message of the round to them. With partial participation
different rounds sum different subsets, and if a client's update changes slowly across rounds the
aggregates form a linear system in the clients' updates:

    s_r = Σ_{i ∈ S_r} w_i u_i        P (rounds × clients, 0/1) · V = S

where s_r is the round's sum and w_i the client's aggregation weight. Flower's SecAgg+ workflow unmasks the
example-weighted mean, so s_r = N_r · mean_r with N_r the round's total examples, V_i = n_i u_i, and the
per-client counts follow from the same system on the totals, P n = N. Without the totals the weights are
taken as equal (s_r = K_r · mean_r): exact when every client holds as many records.

Client i's update is identifiable exactly when e_i lies in the row space of P (its column is orthogonal
to P's null space); then every least-squares solution gives it the same value. A rank-deficient P still
identifies some clients: with pairs (K = 2), those on an odd cycle of the "sampled together" graph.
The least-squares fit's residual measures how far the slowly-varying model is from the data (0 by
construction when there are no more rounds than rank); a client's `gain` (the norm of the row of P⁺ that
produces its update) says how much round-to-round drift and quantisation noise it amplifies.

Who took part in a round is what the server itself knows: the aggregate observation's node ids when the
ledger names them, else its partition ids (the round's DOWN recipients, or the aggregate entry's
`partition-ids`), a fixed relabelling of the node ids the server selected. `clients` is carried only
for scoring. Nothing here reads ground truth, except `mean_true_updates` and `recovery_scores`, which
are evaluation helpers for experiments that have the clients' real updates.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

from attacks.observe import Observation, RunInfo
from attacks.threat import AGGREGATE
from simulator.errors import MuprivError

KIND = "disaggregated"
RANK_RTOL = 1e-9  # singular values below this fraction of the largest count as zero (P is a 0/1 matrix)
NULL_TOL = 1e-8  # a column whose null-space component is below this is identifiable
COUNT_RTOL = 1e-6  # the counts system P n = N must fit this well for example weights to be trusted


# ------------------------------------------------------------------------------------------ linear algebra
@dataclass(frozen=True)
class Solve:
    """The least-squares solution of P X = B (rows optionally weighted) and how well it is determined."""

    x: np.ndarray  # (clients, D): identifiable rows are exact for consistent data; the others are min-norm
    rank: int
    singular_values: np.ndarray
    identifiable: np.ndarray  # (clients,) bool
    gains: np.ndarray  # (clients,) ‖row of P⁺‖ in the unweighted rounds: noise amplification
    residual: float  # ‖P X − B‖ / ‖B‖ in the weighted norm

    @property
    def condition(self) -> float:
        """σ_max / σ_rank: the conditioning of the determined part."""
        s = self.singular_values
        return float(s[0] / s[self.rank - 1]) if self.rank else float("inf")


def solve_rounds(p: np.ndarray, b: np.ndarray, row_weights: np.ndarray | None = None) -> Solve:
    """Minimum-norm weighted least squares through the SVD, which also gives the rank and, from the null
    space, which columns (clients) are identifiable."""
    p = np.asarray(p, np.float64)
    b = np.asarray(b, np.float64).reshape(p.shape[0], -1)
    sw = np.sqrt(np.ones(p.shape[0]) if row_weights is None else np.asarray(row_weights, np.float64))
    pw, bw = p * sw[:, None], b * sw[:, None]
    u, s, vt = np.linalg.svd(pw, full_matrices=True)
    rank = int(np.sum(s > RANK_RTOL * s[0])) if s.size and s[0] > 0 else 0
    null = vt[rank:]
    identifiable = np.linalg.norm(null, axis=0) < NULL_TOL if null.size else np.ones(p.shape[1], bool)
    pinv = vt[:rank].T @ (u[:, :rank] / s[:rank]).T  # (clients, rounds), weighted
    x = pinv @ bw
    coeff = pinv * sw[None, :]  # X = coeff @ B in the rounds' own units
    denom = float(np.linalg.norm(bw))
    residual = float(np.linalg.norm(pw @ x - bw) / denom) if denom > 0 else 0.0
    return Solve(x, rank, s, identifiable, np.linalg.norm(coeff, axis=1), residual)


# ------------------------------------------------------------------------------------------ the rounds
def members(obs: Observation) -> tuple[Hashable, ...]:
    """Who the server summed in this aggregate: its node ids when the ledger names them, else the partition
    ids of the nodes it sampled (a fixed relabelling of the same node ids)."""
    return tuple(obs.node_ids) if obs.node_ids else tuple(obs.partition_ids)


@dataclass(frozen=True)
class Rounds:
    """The aggregates of one window as a linear system."""

    observations: tuple[Observation, ...]  # one per round, in round order
    members: tuple[Hashable, ...]  # the columns
    matrix: np.ndarray  # (rounds, clients) 0/1 participation
    names: tuple[str, ...]  # parameter tensors present in every aggregate
    skipped: tuple[str, ...] = ()  # aggregates left out, and why

    @property
    def round_numbers(self) -> tuple[int, ...]:
        return tuple(int(o.round or 0) for o in self.observations)


def usable_aggregates(observations: Iterable[Observation]) -> tuple[list[Observation], list[str]]:
    """The aggregates that can enter the system (an update, K participants named), in round order, and a note
    for each one that cannot."""
    kept: list[Observation] = []
    notes: list[str] = []
    for o in observations:
        if o.kind != "aggregate":
            continue
        who = members(o)
        if not o.update:
            notes.append(f"round {o.round}: no parameter update")
        elif not who:
            notes.append(f"round {o.round}: participants unknown")
        elif len(set(who)) != o.num_clients:
            notes.append(f"round {o.round}: {o.num_clients} summands but {len(set(who))} named participants")
        else:
            kept.append(o)
    return sorted(kept, key=lambda o: int(o.round or 0)), notes


def participation(aggregates: Sequence[Observation], skipped: Sequence[str] = ()) -> Rounds:
    """The participation matrix P of these aggregates (columns: every participant, in first-seen order)."""
    cols: dict[Hashable, int] = {}
    for o in aggregates:
        for m in members(o):
            cols.setdefault(m, len(cols))
    p = np.zeros((len(aggregates), len(cols)))
    for r, o in enumerate(aggregates):
        p[r, [cols[m] for m in members(o)]] = 1.0
    names = [n for n in aggregates[0].update if all(n in o.update for o in aggregates)] if aggregates else []
    return Rounds(tuple(aggregates), tuple(cols), p, tuple(names), tuple(skipped))


def windows(n_rounds: int, size: int | None, stride: int | None = None) -> list[slice]:
    """Consecutive windows of `size` rounds every `stride` rounds (default: non-overlapping); the last one is
    aligned to the end so that every round is used. None: one window of every round."""
    if size is None or size >= n_rounds:
        return [slice(0, n_rounds)]
    step = max(1, stride or size)
    starts = list(range(0, n_rounds - size + 1, step))
    if starts[-1] + size < n_rounds:
        starts.append(n_rounds - size)
    return [slice(s, s + size) for s in starts]


# ------------------------------------------------------------------------------------------ one window
@dataclass
class Disaggregation:
    """One window's result: the system, its solution, the recovered observations and the skipped clients."""

    rounds: Rounds
    decay: float
    row_weights: np.ndarray
    weighting: str = "equal"  # "examples" (sums = N_r · mean, counts solved) or "equal" (sums = K_r · mean)
    weighting_note: str = ""
    solve: Solve | None = None
    examples: dict[Hashable, float] = field(default_factory=dict)  # per participant, when solved
    observations: list[Observation] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # client -> why it was not recovered

    def summary(self) -> dict[str, Any]:
        """The diagnostics, JSON-ready (for an attack row's settings)."""
        s = self.solve
        return {"method": "cross-round least squares (Lam et al. 2021)", "rounds": list(self.rounds.round_numbers),
                "clients": len(self.rounds.members), "rank": s.rank if s else 0,
                "condition": s.condition if s else float("inf"), "residual": s.residual if s else float("nan"),
                "weighting": self.weighting, "decay": self.decay, "recovered": len(self.observations),
                "skipped": dict(self.skipped), "aggregates_left_out": list(self.rounds.skipped)}


def _bookkeeping(rounds: Rounds) -> dict[Hashable, tuple[str, int | None]]:
    """Simulation bookkeeping, for scoring only: the client name and partition id each participant carries."""
    out: dict[Hashable, tuple[str, int | None]] = {}
    for o in rounds.observations:
        who = members(o)
        names = o.clients if len(o.clients) == len(who) else tuple(map(str, who))
        pids = o.partition_ids if len(o.partition_ids) == len(who) else (None,) * len(who)
        out.update(zip(who, zip(names, pids)))
    return out


def _row_weights(rounds: Rounds, decay: float) -> np.ndarray:
    """decay ** (rounds before the window's last round): 1 keeps every round equal, < 1 favours recent ones."""
    r = np.asarray(rounds.round_numbers, np.float64)
    return np.power(float(decay), r.max() - r) if r.size else r


def _round_totals(rounds: Rounds) -> np.ndarray | None:
    """Each round's total examples (what SecAgg+ unmasks as its weight), when every aggregate has it."""
    totals = [o.num_examples for o in rounds.observations]
    return None if any(t is None or t <= 0 for t in totals) else np.asarray(totals, np.float64)


def _example_counts(rounds: Rounds, weights: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Per-client example counts from P n = N, or None (and why) when the totals are missing or inconsistent."""
    totals = _round_totals(rounds)
    if totals is None:
        return None, "equal weights assumed (the aggregates carry no example totals)"
    counts = solve_rounds(rounds.matrix, totals, weights)
    n = counts.x[:, 0]
    if counts.residual > COUNT_RTOL or np.any(n[counts.identifiable] <= 0):
        return None, f"equal weights assumed (example totals inconsistent across rounds: residual {counts.residual:.2g})"
    return n, "example weights (counts solved from the round totals)"


def _sums(rounds: Rounds, totals: np.ndarray | None) -> np.ndarray:
    """(rounds, D): each round's sum of its clients' (weighted) updates, flattened in `names` order."""
    rows = []
    for r, o in enumerate(rounds.observations):
        scale = totals[r] if totals is not None else float(o.num_clients)
        rows.append(np.concatenate([np.ravel(np.asarray(o.update[n], np.float64)) for n in rounds.names]) * scale)
    return np.stack(rows)


def _unflatten(vec: np.ndarray, like: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    out, at = {}, 0
    for n in names:
        shape = np.shape(like[n])
        size = int(np.prod(shape)) if shape else 1
        out[n] = vec[at : at + size].reshape(shape).astype(np.float32)
        at += size
    return out


def _base_params(rounds: Rounds, rows: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """The (row-weighted) mean of the global parameters of the rounds the client took part in: the recovered
    update is its typical update over those rounds, so this is where that update started on average."""
    w = weights[rows] / max(float(weights[rows].sum()), 1e-300)
    obs = [rounds.observations[r] for r in rows]
    names = [n for n in obs[0].global_params if all(n in o.global_params for o in obs)]
    return {n: np.sum([wi * np.asarray(o.global_params[n], np.float64) for wi, o in zip(w, obs)], axis=0).astype(np.float32)
            for n in names}


def _mean_examples(rounds: Rounds, rows: np.ndarray) -> float | None:
    """Without per-client counts: the mean records per client of the rounds the client took part in."""
    per = [o.num_examples / o.num_clients for o in (rounds.observations[r] for r in rows) if o.num_examples]
    return float(np.mean(per)) if per else None


def _recovered(d: Disaggregation, col: int, counts: np.ndarray | None) -> Observation:
    """The Observation of one identifiable client (its latest aggregate with the recovered update): the threat
    model stays the aggregate's; `round` is the latest round it took part in."""
    rounds, sol = d.rounds, d.solve
    assert sol is not None
    rows = np.flatnonzero(rounds.matrix[:, col])
    last = rounds.observations[rows[-1]]
    member = rounds.members[col]
    name, partition = _bookkeeping(rounds)[member]
    vec = sol.x[col] / counts[col] if counts is not None else sol.x[col]
    n_i = float(counts[col]) if counts is not None else _mean_examples(rounds, rows)
    note = (f"disaggregated from {len(rounds.observations)} rounds ({rounds.round_numbers[0]}-{rounds.round_numbers[-1]}, "
            f"client in {len(rows)}); rank {sol.rank} of {len(rounds.members)} clients; condition {sol.condition:.3g}; "
            f"residual {sol.residual:.3g}; gain {sol.gains[col]:.3g}; {d.weighting_note}; "
            f"base: mean global parameters of its rounds")
    return replace(last, kind=KIND, update=_unflatten(vec, last.update, rounds.names),
                   global_params=_base_params(rounds, rows, d.row_weights),
                   num_examples=None if n_i is None else int(round(n_i)), local_steps=None, num_clients=1,
                   node_ids=(member,) if last.node_ids else (), partition_ids=() if partition is None else (partition,),
                   clients=(name,), note=note)


def disaggregate_window(rounds: Rounds, decay: float = 1.0) -> Disaggregation:
    """Solve one window's system and turn every identifiable client into an Observation."""
    out = Disaggregation(rounds, decay, _row_weights(rounds, decay))
    names = _bookkeeping(rounds)
    if not rounds.observations or not rounds.names:
        out.skipped = {names[m][0]: "not identifiable: no usable aggregate" for m in rounds.members}
        return out
    counts, out.weighting_note = _example_counts(rounds, out.row_weights)
    out.weighting = "examples" if counts is not None else "equal"
    out.solve = solve_rounds(rounds.matrix, _sums(rounds, _round_totals(rounds) if counts is not None else None),
                             out.row_weights)
    for col, member in enumerate(rounds.members):
        if not out.solve.identifiable[col]:
            out.skipped[names[member][0]] = (f"not identifiable: its column is not determined by the "
                                             f"{len(rounds.observations)} rounds (rank {out.solve.rank} of "
                                             f"{len(rounds.members)} clients)")
            continue
        if counts is not None:
            out.examples[member] = float(counts[col])
        out.observations.append(_recovered(out, col, counts))
    return out


# ------------------------------------------------------------------------------------------ entry points
def disaggregation_report(observations: Sequence[Observation], info: RunInfo | None = None, *, window: int | None = None,
                          stride: int | None = None, decay: float = 1.0) -> list[Disaggregation]:
    """Every window's disaggregation of a run's aggregates (empty unless the threat observes aggregates only).
    window: rounds per window (None: all rounds at once); stride: rounds between windows (default: the window);
    decay: weight of a round = decay ** (rounds before the window's last)."""
    if not 0.0 < decay <= 1.0:
        raise MuprivError(f"disaggregation decay must be in (0, 1], got {decay}")
    if (window is not None and window < 1) or (stride is not None and stride < 1):
        raise MuprivError(f"disaggregation window and stride must be >= 1, got {window} and {stride}")
    if info is not None and info.observable != AGGREGATE:
        return []
    aggregates, notes = usable_aggregates(observations)
    if not aggregates:
        return []
    return [disaggregate_window(participation(aggregates[w], notes), decay) for w in windows(len(aggregates), window, stride)]


def disaggregate(observations: Sequence[Observation], info: RunInfo | None = None, *, window: int | None = None,
                 stride: int | None = None, decay: float = 1.0) -> list[Observation]:
    """The recoverable clients' updates as Observations of kind "disaggregated" (one per client and window),
    ready for the existing attacks. Clients that are not identifiable are left out (see
    `disaggregation_report` for why)."""
    return [o for d in disaggregation_report(observations, info, window=window, stride=stride, decay=decay)
            for o in d.observations]


# ------------------------------------------------------------------------------------------ evaluation only
def mean_true_updates(per_round: Mapping[tuple[str, int], Mapping[str, np.ndarray]], rounds: Iterable[int] | None = None
                      ) -> dict[str, dict[str, np.ndarray]]:
    """Evaluation only (needs the clients' real updates): each client's mean update over the rounds it took
    part in (within `rounds` when given), from {(client, round): {tensor: update}}."""
    keep = None if rounds is None else set(int(r) for r in rounds)
    grouped: dict[str, list[Mapping[str, np.ndarray]]] = {}
    for (client, rnd), upd in per_round.items():
        if keep is None or int(rnd) in keep:
            grouped.setdefault(client, []).append(upd)
    return {c: {n: np.mean([np.asarray(u[n], np.float64) for u in ups], axis=0) for n in ups[0]} for c, ups in grouped.items()}


def _flat(update: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(update[n], np.float64)) for n in names])


def update_similarity(estimate: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray],
                      names: Sequence[str] | None = None) -> dict[str, float]:
    """Cosine and relative error ‖estimate − truth‖ / ‖truth‖ over the tensors both hold (or `names`)."""
    names = [n for n in (names or estimate) if n in estimate and n in truth]
    a, b = _flat(estimate, names), _flat(truth, names)
    nb = float(np.linalg.norm(b))
    cos = float(a @ b / max(float(np.linalg.norm(a)) * nb, 1e-300))
    return {"cosine": cos, "rel_error": float(np.linalg.norm(a - b) / max(nb, 1e-300))}


def recovery_scores(recovered: Sequence[Observation], truth: Mapping[str, Mapping[str, np.ndarray]],
                    names: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Evaluation only: per recovered client, its cosine and relative error to `truth[client]` (e.g. from
    `mean_true_updates`)."""
    return {o.clients[0]: update_similarity(o.update, truth[o.clients[0]], names)
            for o in recovered if o.clients and o.clients[0] in truth}
