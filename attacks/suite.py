"""Each attack applied to one Observation: label leakage, analytic features, DLG, Inverting Gradients,
multi-step. Inputs: the observation, the public prior, the budget and a seed -- never ground truth."""
from __future__ import annotations

import time

import numpy as np
import torch

from attacks.analytic import recover_encoder_input, recover_pooled_features
from attacks.attribute import attack_attribute, budget_options
from attacks.budget import Budget
from attacks.inversion import InversionConfig, invert
from attacks.labels import calibrate_counts, estimate_labels, gradient_like, motor_bias_name
from attacks.model import attacker_model, bce_loss, kernel_param_names
from attacks.observe import Observation
from attacks.priors import PopulationPrior, lag_range
from attacks.replay import MatchProblem
from attacks.result import AttackContext, AttackResult
from attacks.threat import NOT_APPLICABLE_NOTHING, attacks_for
from simulator.core.device import rng_devices


def _na(attack: str, i: int, obs: Observation, why: str) -> AttackResult:
    return AttackResult(attack, i, obs.threat.name, note=f"not applicable: {why}")


def _steps(obs: Observation) -> int:
    if obs.local_steps:
        return int(obs.local_steps)
    per_client = max(1, (obs.num_examples or obs.training.batch_size) // max(1, obs.num_clients))
    return obs.training.steps(per_client)


def _grads(obs: Observation, names: list[str]) -> dict[str, np.ndarray]:
    steps = _steps(obs)
    return {n: gradient_like(obs.update[n], obs.global_params[n], obs.training, steps) for n in names if n in obs.update}


# ------------------------------------------------------------------------------------------ attacks
def attack_labels(obs: Observation, i: int, ctx: AttackContext) -> AttackResult:
    start = time.perf_counter()
    model = attacker_model(obs.model, obs.base_params(), seed=ctx.seed)
    name = motor_bias_name(len(model.decoder.layers))
    if name not in obs.update:
        return _na("labels", i, obs, f"{name} is not shared")
    g = _grads(obs, [name])[name]
    calibration = None
    if obs.training.optimizer == "sgd":
        calibration = calibrate_counts(model, torch.as_tensor(ctx.prior.samples), obs.training.pos_weight)
    est = estimate_labels(g, obs.model.n_classes, obs.num_examples if obs.num_clients == 1 else None, calibration)
    if est.fraction is not None and est.counts is None and obs.num_examples:
        est.counts = np.round(est.fraction * obs.num_examples)
    settings = {"rule": "sign of the motor f1+f2 bias update", "counts": "calibrated on the prior" if calibration else
                "none (Adam normalises magnitudes)", "steps": _steps(obs), "num_examples": obs.num_examples,
                "optimizer": obs.training.optimizer}
    return AttackResult("labels", i, obs.threat.name, settings, residual=est.residual, seconds=time.perf_counter() - start,
                        labels=est.record_labels if obs.num_clients == 1 else None, presence=est.presence, counts=est.counts)


def attack_features(obs: Observation, i: int, ctx: AttackContext) -> AttackResult:
    start = time.perf_counter()
    model = attacker_model(obs.model, obs.base_params(), seed=ctx.seed)
    names = [n for n in obs.update if n.startswith("decoder.layers.0.") or n.startswith("encoder.")]
    grads = _grads(obs, names)
    ff_mask = model.decoder.layers[0].mask.numpy()
    feats = recover_pooled_features(grads, ff_mask, obs.model.d_model)
    enc = recover_encoder_input(grads)
    if feats is None and enc is None:
        return _na("features", i, obs, "neither the decoder's first layer nor the encoder is shared")
    settings = {"method": "rank-one least squares on layer gradients", "steps": _steps(obs)}
    residual = feats[1] if feats is not None else enc[1]  # type: ignore[index]
    if enc is not None:
        settings["encoder_residual"] = enc[1]
    return AttackResult("features", i, obs.threat.name, settings, residual=residual, seconds=time.perf_counter() - start,
                        features=None if feats is None else feats[0], encoder_input=None if enc is None else enc[0])


def build_problem(obs: Observation, n_examples: int, seed: int = 0) -> MatchProblem:
    """The matching problem of one observation: the public model at the round's weights, the observed update,
    the granted local training and `n_examples` records behind the update (all clients for an aggregate)."""
    model = attacker_model(obs.model, obs.base_params(), seed=seed)
    for p in model.parameters():
        p.requires_grad_(False)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    observed = tuple(n for n in base if n in obs.update)
    target = {n: torch.as_tensor(np.asarray(obs.update[n]), dtype=torch.float32) for n in observed}
    return MatchProblem(model=model, base=base, observed=observed, target=target, training=obs.training,
                        loss_fn=bce_loss(obs.training.pos_weight), input_shape=(obs.data.length, obs.model.n_leads),
                        n_classes=obs.model.n_classes, n_examples=n_examples, n_clients=obs.num_clients,
                        local_steps=obs.local_steps, kernel_names=kernel_param_names(model))


def _one_sgd_step(obs: Observation) -> bool:
    """The one-step (FedSGD) view is exact only for a single plain SGD step (Adam's first step is ~lr sign(g))."""
    return _steps(obs) == 1 and obs.training.optimizer == "sgd"


def _update_view(obs: Observation, b: Budget, method: str) -> tuple[bool, str]:
    """(unroll, description): which model of the client's update this attack fits at this budget."""
    steps, opt = _steps(obs), obs.training.optimizer
    if _one_sgd_step(obs):
        return False, "one step (FedSGD view): exact for one SGD step"
    if method == "multistep" or b.unroll:
        return True, f"unrolled: the client's {steps} local {opt} step(s) replayed"
    return False, (f"one step (FedSGD view) of {steps} local {opt} step(s): an approximation; budget "
                   f"{b.name!r} leaves the unrolled view to multistep")


def _record_count(obs: Observation, b: Budget) -> tuple[int, int, str]:
    """(dummy records, records behind the update, note): one dummy per record unless the budget caps it."""
    known = obs.num_examples is not None
    n_examples = obs.num_examples or max(b.max_records or 1, obs.num_clients)
    n_rec = n_examples if b.max_records is None else max(1, min(n_examples, b.max_records))
    notes = [] if known else [f"records behind the update not reported: assumed {n_examples}"]
    if n_rec < n_examples:
        notes.append(f"reconstructing {n_rec} of {n_examples} records: budget cap max_records")
    return n_rec, n_examples, "; ".join(notes)


def _inversion_config(method: str, obs: Observation, b: Budget, prior: PopulationPrior, n_rec: int, unroll: bool,
                      labels_known: bool, seed: int) -> InversionConfig:
    """The budget's settings for one attack. DLG: L2 per observed tensor on band-limited Fourier coefficients,
    L-BFGS, no priors. IG and multistep: cosine, signed Adam, the budget's basis and priors."""
    dlg = method == "dlg"
    return InversionConfig(
        method="dlg" if dlg else "ig",
        n_records=n_rec,
        iters={"dlg": b.dlg_iters, "ig": b.ig_iters, "multistep": b.multistep_iters}[method],
        inner=b.dlg_inner,
        restarts={"dlg": b.dlg_restarts, "ig": b.ig_restarts, "multistep": b.multistep_restarts}[method],
        lr=b.ig_lr,
        tol=b.dlg_tol if dlg else b.ig_tol,
        window=b.dlg_window if dlg else b.ig_window,
        max_seconds={"dlg": b.dlg_seconds, "ig": b.ig_seconds, "multistep": b.multistep_seconds}[method],
        decays=b.ig_decays,
        stages_hz=() if dlg else tuple(b.ig_stages_hz),
        unroll=unroll,
        max_unroll_steps=b.max_unroll_steps,
        labels="known" if labels_known else "joint",
        init="prior",
        init_scale=b.init_scale,
        basis="fourier" if dlg else b.ig_basis,
        per_tensor=dlg,
        tv_weight=0.0 if dlg else b.tv_weight,
        spectral_weight=0.0 if dlg else b.spectral_weight,
        period_weight=0.0 if dlg else b.period_weight,
        einthoven_weight=0.0 if dlg or obs.data.scale == "lead" else b.einthoven_weight,
        lags=lag_range(prior.fs, obs.data.length),
        value_range=(prior.lo, prior.hi),
        bandlimit_hz=b.bandlimit_hz if b.bandlimit_hz is None or b.bandlimit_hz < prior.fs / 2 else None,
        fs=prior.fs,
        seed=seed,
    )


def attack_inversion(obs: Observation, i: int, ctx: AttackContext, method: str, known: AttackResult | None) -> AttackResult:
    """method: "dlg", "ig" or "multistep" (Inverting Gradients' objective on the unrolled local steps).
    Whether dlg and ig unroll the client's local training is the budget's `unroll`; the note says which
    view was fitted and how many of the update's records were reconstructed."""
    b = ctx.budget
    if not obs.update:
        return _na(method, i, obs, "no parameter update observed")
    if method == "multistep" and _one_sgd_step(obs):
        return _na(method, i, obs, "one SGD step: identical to ig")
    if method == "multistep" and b.unroll and "ig" in b.attacks:
        return AttackResult(method, i, obs.threat.name, note=f"skipped: ig unrolls the local steps at budget {b.name!r} "
                            "(the same objective)")
    unroll, view = _update_view(obs, b, method)
    steps = _steps(obs)
    n_rec, n_examples, records_note = _record_count(obs, b)
    labels_known = known is not None and known.labels is not None and n_rec == n_examples == 1
    cfg = _inversion_config(method, obs, b, ctx.prior, n_rec, unroll, labels_known, ctx.seed)
    problem = build_problem(obs, n_examples, seed=ctx.seed)
    problem.to(torch.float64 if b.precision == "float64" else None, ctx.device)
    with torch.random.fork_rng(devices=rng_devices(ctx.device)):
        torch.manual_seed(ctx.seed)
        rec = invert(problem, cfg, known_labels=known.labels if labels_known and known else None,
                     prior_mean=ctx.prior.mean, prior_samples=ctx.prior.samples)
    settings = cfg.to_dict()
    settings.update(steps=steps, steps_unrolled=rec.steps_unrolled if unroll else 1, update_model=view,
                    records=n_rec, records_behind_update=n_examples, converged=rec.converged, iterations=rec.iterations,
                    stop_reason=rec.stop_reason, evaluations=rec.evaluations, restart_residuals=rec.restart_residuals,
                    restart_stops=rec.restart_stops, observed_tensors=len(problem.observed),
                    labels_from="label attack (sign rule)" if labels_known else "optimised jointly", precision=b.precision,
                    device=str(ctx.device))
    notes = [records_note] if records_note else []
    if unroll and rec.steps_unrolled < steps:
        notes.append(f"unrolled {rec.steps_unrolled} of {steps} local steps: budget cap max_unroll_steps")
    if not unroll and not _one_sgd_step(obs):
        notes.append(view)
    return AttackResult(method, i, obs.threat.name, settings, note="; ".join(notes), residual=max(0.0, rec.residual),
                        seconds=rec.seconds, x=rec.x, labels=rec.labels, converged=rec.converged,
                        iterations=rec.iterations, stop_reason=rec.stop_reason)


def attack_raw(obs: Observation, i: int) -> AttackResult:
    raw = obs.raw
    return AttackResult("raw", i, obs.threat.name, {"observed": "raw records"}, residual=0.0,
                        x=np.asarray(raw["x"], np.float32), labels=np.asarray(raw["y"]).astype(np.int64),
                        presence=(np.asarray(raw["y"]) > 0).any(0).astype(np.int64),
                        counts=np.asarray(raw["y"]).sum(0).astype(np.float64))


SOFT_LABEL_THRESHOLD = 0.5  # a distilled record's soft label (its group's share of positives) read as a diagnosis


def attack_distilled(obs: Observation, i: int) -> AttackResult:
    """A distilled set taken at face value: each synthetic record as the attacker's guess of one of the patient's
    records, each soft label >= 0.5 as a diagnosis, and a class present wherever any soft label is above 0 (a soft
    label is the mean over the patient's real records of the record's group, so it is positive only if some record
    has the class). No optimisation: the scorer's nearest-record matching against the cohort, next to the same
    null controls as every reconstruction, measures what the records themselves give away."""
    start = time.perf_counter()
    x = np.asarray(obs.raw["x"], np.float32)
    y = np.asarray(obs.raw["y"], np.float64)
    known = np.asarray(obs.raw.get("known", np.ones_like(y)), bool)
    soft = np.where(known, y, 0.0)
    return AttackResult("distilled", i, obs.threat.name,
                        {"observed": "distilled records", "records": int(len(x)),
                         "labels": f"soft label >= {SOFT_LABEL_THRESHOLD}", "presence": "any soft label > 0"},
                        residual=0.0, seconds=time.perf_counter() - start, x=x,
                        labels=(soft >= SOFT_LABEL_THRESHOLD).astype(np.int64),
                        presence=(soft > 0).any(0).astype(np.int64))


INVERSIONS = ("dlg", "ig", "multistep")


def run_attacks(obs: Observation, i: int, ctx: AttackContext, invert_this: bool = True) -> list[AttackResult]:
    """Every attack the budget asks for that applies to this observation's threat model. With invert_this
    False (outside the budget's inversion targets) the inversions are listed as skipped."""
    if obs.kind == "nothing":
        return [AttackResult("none", i, obs.threat.name, note=NOT_APPLICABLE_NOTHING)]
    if obs.kind == "raw":
        return [attack_raw(obs, i)]
    if obs.kind == "distilled":
        return [attack_distilled(obs, i)]
    wanted = [a for a in attacks_for(obs.threat) if a in ctx.budget.attacks]
    results: list[AttackResult] = []
    labels: AttackResult | None = None
    for name in wanted:
        if name == "labels":
            labels = attack_labels(obs, i, ctx)
            results.append(labels)
        elif name == "features":
            results.append(attack_features(obs, i, ctx))
        elif name == "attribute":
            results.append(attack_attribute(obs, i, ctx, **budget_options(ctx.budget)))
        elif not invert_this:
            results.append(AttackResult(name, i, obs.threat.name, note=f"skipped: outside the budget's "
                                        f"{ctx.budget.max_targets} inversion target(s)"))
        else:
            results.append(attack_inversion(obs, i, ctx, name, labels))
    return results
