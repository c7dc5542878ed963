"""Synthetic 12-lead ECGs: per-beat P-QRS-T waves as a moving cardiac dipole projected onto the 12 leads.

Each wave is a Gaussian in time times a 3-D dipole direction (x = left, y = inferior, z = anterior). One beat
template per record (n, L, 3) is built from the record's intervals, then placed at every beat time by an FFT
convolution with a (fractional) impulse train, so the cost is a few FFTs per record whatever the heart rate.
Limb leads follow Einthoven/Goldberger exactly (III = II - I, aVR = -(I+II)/2, ...); precordial leads are
horizontal-plane projections V1 (right-anterior) ... V6 (left).

Classes by their defining features (ranges chosen with a margin so the labels are unambiguous):
  normal  sinus, 62-95 bpm, PR 120-190 ms, QRS 75-105 ms
  SB      sinus 40-54 bpm            ST   sinus 108-150 bpm
  1dAVb   PR 230-320 ms              AF   no P waves, f-waves 4-9 Hz, irregular RR (CV ~0.2), 70-130 bpm
  RBBB    QRS 125-160 ms, late rightward-anterior R' (rsR' in V1-V2, wide S in I/V6), T inverted in V1-V3
  LBBB    QRS 130-170 ms, no septal q, broad notched R in I/aVL/V5-V6, deep QS in V1, discordant T
Combinations: at most one rhythm of {SB, ST, AF}, at most one of {RBBB, LBBB}, and no 1dAVb with AF.
Everything is drawn from one numpy Generator: the same seed gives the same records."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import fft as sfft

from simulator.core.labels import CLASSES, LEADS
from simulator.data.records import ECGRecords, META_COLUMNS
from simulator.errors import MuprivError

WEIGHT_NAMES: tuple[str, ...] = ("none",) + CLASSES   # "none" = a normal record
_C = {c: i for i, c in enumerate(CLASSES)}
_RHYTHM = ("SB", "ST", "AF")
_CONDUCTION = ("RBBB", "LBBB")

# Lead vectors (3 -> 12).
_PRECORDIAL_DEG = (115.0, 95.0, 75.0, 55.0, 30.0, 5.0)
_PRECORDIAL_GAIN = (1.0, 1.5, 1.6, 1.5, 1.2, 0.9)


def lead_matrix() -> np.ndarray:
    """(3, 12) projection of a dipole (x left, y inferior, z anterior) onto LEADS."""
    I = np.array([1.0, 0.0, 0.0])
    II = np.array([0.5, np.sqrt(3) / 2, 0.0])
    III = II - I
    limb = [I, II, III, -(I + II) / 2, (I - III) / 2, (II + III) / 2]
    prec = [g * np.array([np.cos(np.radians(a)), 0.0, np.sin(np.radians(a))]) for a, g in zip(_PRECORDIAL_DEG, _PRECORDIAL_GAIN)]
    return np.stack(limb + prec, axis=1)


def _direction(frontal_deg, tilt_deg) -> np.ndarray:
    """Unit dipole direction(s) from a frontal-plane angle (0 = left, 90 = inferior) and an anterior tilt."""
    a, t = np.radians(frontal_deg), np.radians(tilt_deg)
    return np.stack([np.cos(t) * np.cos(a), np.cos(t) * np.sin(a), np.sin(t)], axis=-1)


@dataclass(frozen=True)
class DeviceProfile:
    """How the recording device sees the heart: rate, duration and noise (all in mV)."""
    name: str = "clinical"
    fs: float = 400.0
    seconds: float = 10.24          # 4096 samples at 400 Hz
    wander_mv: float = 0.05         # baseline wander amplitude (0.05-0.5 Hz)
    muscle_mv: float = 0.008        # white muscle-noise SD
    powerline_mv: float = 0.004
    powerline_hz: float = 50.0
    gain_sd: float = 0.05           # per-lead electrode gain jitter from record to record (log-normal SD)
    # How each patient wears the device, fixed for that patient: where the electrodes sit relative to the heart
    # (a rotation of the lead frame, SD in degrees about each body axis) and each electrode's contact gain
    # (log-normal SD per lead). Filters and resampling cannot remove this; a linear map of the leads can undo it.
    placement_deg: float = 0.0
    contact_gain_sd: float = 0.0

    def __post_init__(self) -> None:
        if self.fs < 100 or self.seconds < 2:
            raise MuprivError(f"synthetic device {self.name}: fs must be >= 100 Hz and seconds >= 2 (got {self.fs}, {self.seconds})")
        if self.placement_deg < 0 or self.contact_gain_sd < 0:
            raise MuprivError(f"synthetic device {self.name}: placement_deg and contact_gain_sd must be >= 0")

    @property
    def n_samples(self) -> int:
        return int(round(self.fs * self.seconds))


def _default_weights() -> dict[str, float]:
    return {"none": 0.3, **{c: 0.7 / len(CLASSES) for c in CLASSES}}


@dataclass(frozen=True)
class Population:
    """Who is recorded: class mix (weights over 'none' + CLASSES for a record's main finding), how often a second
    compatible class is added, demographics, and the device."""
    name: str = "source"
    class_weights: Mapping[str, float] = field(default_factory=_default_weights)
    combo_prob: float = 0.2
    age_mean: float = 58.0
    age_sd: float = 15.0
    male_fraction: float = 0.5
    device: DeviceProfile = field(default_factory=DeviceProfile)

    def weight_vector(self) -> np.ndarray:
        unknown = set(self.class_weights) - set(WEIGHT_NAMES)
        if unknown:
            raise MuprivError(f"population {self.name}: unknown class weight(s) {sorted(unknown)}; use {', '.join(WEIGHT_NAMES)}")
        w = np.array([float(self.class_weights.get(k, 0.0)) for k in WEIGHT_NAMES])
        if (w < 0).any() or w.sum() <= 0:
            raise MuprivError(f"population {self.name}: class weights must be >= 0 and not all 0, got {dict(self.class_weights)}")
        return w / w.sum()


# ----------------------------------------------------------------------------------------------------------
# Patients and labels
# ----------------------------------------------------------------------------------------------------------
def sample_traits(n_patients: int, pop: Population, rng: np.random.Generator) -> pd.DataFrame:
    """One row per patient: demographics and the stable shape of their ECG."""
    P = n_patients
    age = np.clip(rng.normal(pop.age_mean, pop.age_sd, P), 18, 95)
    male = rng.random(P) < pop.male_fraction
    old = (age - 50.0) / 10.0
    return pd.DataFrame({
        "age": np.round(age),
        "sex": np.where(male, "M", "F"),
        "axis_deg": np.clip(rng.normal(55, 18, P) - 4.0 * old, -25, 95),
        "tilt_deg": rng.normal(-10, 5, P),
        "qrs_amp": 1.1 * np.exp(rng.normal(0, 0.2, P)) * np.where(male, 1.0, 0.85) * np.clip(1 - 0.04 * old, 0.7, 1.2),
        "t_amp": 0.28 * np.exp(rng.normal(0, 0.2, P)),
        "p_amp": 0.13 * np.exp(rng.normal(0, 0.15, P)),
        "hr_base": np.clip(rng.normal(74, 7, P), 64, 92),
        "pr_base": np.clip(rng.normal(0.155, 0.012, P) + 0.002 * old, 0.125, 0.185),
        "qrs_base": np.clip(rng.normal(0.088, 0.006, P), 0.076, 0.102),
        "qtc": np.clip(rng.normal(0.405, 0.012, P) + np.where(male, 0.0, 0.01), 0.37, 0.45),
        **_placement_traits(P, pop.device, rng),
    })


PLACEMENT_COLUMNS = ("place_x_deg", "place_y_deg", "place_z_deg") + tuple(f"contact_{lead}" for lead in LEADS)


def _placement_traits(P: int, device: DeviceProfile, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-patient electrode placement (rotation angles) and contact gains. Drawn only when the device has them,
    so a device without placement shift leaves the random stream, and every record, as before."""
    if device.placement_deg == 0 and device.contact_gain_sd == 0:
        return {c: np.zeros(P) if c.startswith("place") else np.ones(P) for c in PLACEMENT_COLUMNS}
    ang = rng.normal(0.0, device.placement_deg, (P, 3))
    gain = np.exp(rng.normal(0.0, device.contact_gain_sd, (P, len(LEADS))))
    return {c: (ang[:, i] if i < 3 else gain[:, i - 3]) for i, c in enumerate(PLACEMENT_COLUMNS)}


def _rotation(deg_xyz: np.ndarray) -> np.ndarray:
    """(n, 3) angles in degrees about x, y, z -> (n, 3, 3) rotation matrices Rz @ Ry @ Rx."""
    a = np.radians(deg_xyz)
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones(len(a)), np.zeros(len(a))
    rx = np.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], 1).reshape(-1, 3, 3)
    ry = np.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], 1).reshape(-1, 3, 3)
    rz = np.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], 1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def _compatible(a: str, b: str) -> bool:
    if a == b:
        return False
    pair = {a, b}
    if len(pair & set(_RHYTHM)) == 2 or len(pair & set(_CONDUCTION)) == 2:
        return False
    return pair != {"1dAVb", "AF"}


_COMPAT = np.array([[_compatible(a, b) for b in CLASSES] for a in CLASSES])


def sample_labels(weights: np.ndarray, combo_prob: float, rng: np.random.Generator) -> np.ndarray:
    """weights (n, 7) over WEIGHT_NAMES -> multi-hot (n, 6): a main finding plus, with combo_prob, one compatible class."""
    n = weights.shape[0]
    cum = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    main = (rng.random((n, 1)) > cum).sum(axis=1).clip(0, len(WEIGHT_NAMES) - 1)
    return _with_second_class(main, weights, combo_prob, rng)


def sample_labels_given(main_class: np.ndarray, weights: np.ndarray, combo_prob: float, rng: np.random.Generator) -> np.ndarray:
    """Labels whose main finding is given (indices into CLASSES), the second class drawn as sample_labels draws it:
    class-conditional records, so that a test set can hold enough positives of a rare class."""
    main = np.asarray(main_class, np.int64) + 1
    return _with_second_class(main, np.broadcast_to(weights, (len(main), len(WEIGHT_NAMES))), combo_prob, rng)


def _with_second_class(main: np.ndarray, weights: np.ndarray, combo_prob: float, rng: np.random.Generator) -> np.ndarray:
    """main (n,) over WEIGHT_NAMES (0 = none) -> multi-hot (n, 6), adding with combo_prob one compatible class
    drawn by the weights."""
    n = len(main)
    y = np.zeros((n, len(CLASSES)), np.float32)
    has = main > 0
    y[np.flatnonzero(has), main[has] - 1] = 1.0
    second = rng.random(n) < combo_prob
    cls_w = weights[:, 1:] + 1e-3
    u = rng.random(n)
    for i in np.flatnonzero(second & has):
        w = cls_w[i] * _COMPAT[main[i] - 1]
        if w.sum() > 0:
            j = int(np.searchsorted(np.cumsum(w) / w.sum(), u[i]))
            y[i, min(j, len(CLASSES) - 1)] = 1.0
    return y


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------
def record_params(traits: pd.DataFrame, labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-record intervals/amplitudes: traits (n rows, one per record) with small record-to-record jitter."""
    n = len(labels)
    L = {c: labels[:, i] > 0.5 for i, c in enumerate(CLASSES)}
    g = lambda: rng.normal(0, 1, n)  # noqa: E731
    hr = np.clip(traits["hr_base"].to_numpy() * np.exp(0.04 * g()), 63, 95)
    hr = np.where(L["SB"], rng.uniform(40, 54, n), hr)
    hr = np.where(L["ST"], rng.uniform(108, 150, n), hr)
    hr = np.where(L["AF"], rng.uniform(70, 130, n), hr)
    pr = np.clip(traits["pr_base"].to_numpy() + 0.005 * g(), 0.12, 0.19)
    pr = np.where(L["1dAVb"], rng.uniform(0.23, 0.32, n), pr)
    qrs = np.clip(traits["qrs_base"].to_numpy() + 0.003 * g(), 0.075, 0.105)
    qrs = np.where(L["RBBB"], rng.uniform(0.125, 0.16, n), qrs)
    qrs = np.where(L["LBBB"], rng.uniform(0.13, 0.17, n), qrs)
    rr = 60.0 / hr
    qt = traits["qtc"].to_numpy() * np.sqrt(rr) + (qrs - traits["qrs_base"].to_numpy())
    return {
        "hr": hr, "pr": pr, "qrs": qrs, "qt": qt,
        "rr_cv": np.where(L["AF"], rng.uniform(0.15, 0.28, n), rng.uniform(0.01, 0.03, n)),
        "axis": traits["axis_deg"].to_numpy() + 3 * g(), "tilt": traits["tilt_deg"].to_numpy() + 2 * g(),
        "qrs_amp": traits["qrs_amp"].to_numpy() * np.exp(0.05 * g()), "t_amp": traits["t_amp"].to_numpy() * np.exp(0.08 * g()),
        "p_amp": traits["p_amp"].to_numpy() * np.exp(0.08 * g()),
        "placement": np.stack([traits[c].to_numpy(dtype=float) for c in PLACEMENT_COLUMNS[:3]], axis=1),
        "contact": np.stack([traits[c].to_numpy(dtype=float) for c in PLACEMENT_COLUMNS[3:]], axis=1),
        **{k: v for k, v in L.items()},
    }


CHUNK = 128          # records rendered at once
_PRE, _POST = 0.5, 0.75  # template spans [-PRE, +POST] seconds around the R peak


def _templates(p: dict[str, np.ndarray], fs: float) -> np.ndarray:
    """(n, L, 3) one-beat dipole waveform per record, R peak at tau = 0."""
    n = len(p["hr"])
    tau = np.arange(-int(round(_PRE * fs)), int(round(_POST * fs)) + 1) / fs  # (L,)
    rb, lb = p["RBBB"], p["LBBB"]
    qrs, axis, tilt, A = p["qrs"], p["axis"], p["tilt"], p["qrs_amp"]
    on = np.where(rb, -0.35 * qrs, np.where(lb, -0.5 * qrs, -0.45 * qrs))   # QRS onset
    zero = np.zeros(n)
    waves = []  # (center, sigma, amplitude, direction (n, 3))
    # P wave (absent in AF)
    waves.append((on - p["pr"] + 0.05, np.full(n, 0.021), np.where(p["AF"], 0.0, p["p_amp"]), _direction(axis * 0.3 + 35, zero + 10)))
    # septal q: right-anterior, absent in LBBB
    waves.append((on + 0.012, np.full(n, 0.007), np.where(lb, 0.0, 0.14 * A), _direction(zero + 160, zero + 40)))
    # main R: left-inferior along the heart axis (LBBB: replaced by the two broad lobes below)
    waves.append((zero, np.where(rb, 0.012, qrs / 7.5), np.where(lb, 0.0, A), _direction(axis, tilt)))
    # terminal S: right-superior-posterior
    waves.append((np.where(rb, 0.22 * qrs, 0.3 * qrs), np.full(n, 0.010), np.where(lb, 0.0, np.where(rb, 0.25, 0.3) * A),
                  _direction(zero - 130, zero - 40)))
    # RBBB: late right-anterior R' (rsR' in V1-V2, wide S in I, aVL, V5-V6)
    waves.append((on + qrs - 0.035, np.full(n, 0.017), np.where(rb, 0.75 * A, 0.0), _direction(zero + 185, zero + 50)))
    # LBBB: two broad left-posterior lobes -> notched broad R in I/aVL/V5-V6, deep QS in V1
    lb_dir = _direction(axis - 25, zero - 45)
    waves.append((on + 0.33 * qrs, np.full(n, 0.019), np.where(lb, 1.1 * A, 0.0), lb_dir))
    waves.append((on + 0.72 * qrs, np.full(n, 0.019), np.where(lb, 1.15 * A, 0.0), _direction(axis - 35, zero - 50)))
    # T wave (asymmetric: slow upstroke, faster downstroke), concordant normally, discordant in BBB
    t_dir = np.where(lb[:, None], _direction(axis + 155, zero + 35),
                     np.where(rb[:, None], _direction(axis, zero - 30), _direction(axis - 5, zero + 20)))
    t_peak = on + p["qt"] - 0.09
    waves.append((t_peak - 0.03, np.full(n, 0.045), 0.55 * p["t_amp"], t_dir))
    waves.append((t_peak + 0.005, np.full(n, 0.03), 0.65 * p["t_amp"], t_dir))
    c = np.stack([w[0] for w in waves], axis=1)[:, :, None]          # (n, K, 1)
    s = np.stack([w[1] for w in waves], axis=1)[:, :, None]
    a = np.stack([w[2] for w in waves], axis=1)[:, :, None]
    d = np.stack([w[3] for w in waves], axis=1)                       # (n, K, 3)
    shape = a * np.exp(-0.5 * ((tau[None, None, :] - c) / s) ** 2)   # (n, K, L)
    return np.einsum("nkl,nkd->nld", shape, d)


def _beat_times(p: dict[str, np.ndarray], seconds: float, rng: np.random.Generator) -> np.ndarray:
    """(n, B) R-peak times in seconds (NaN = no beat), starting before 0 so earlier beats' T waves are in view."""
    n = len(p["hr"])
    rr0 = 60.0 / p["hr"]
    B = int(np.ceil((seconds + _PRE + _POST + 1.5) / 0.3)) + 2
    k = np.arange(B)[None, :]
    resp = 0.03 * np.sin(2 * np.pi * k * rr0[:, None] / rng.uniform(3.5, 5.5, (n, 1)) + rng.uniform(0, 2 * np.pi, (n, 1)))
    af = p["AF"][:, None]
    jitter = np.where(af, rng.normal(0, 1, (n, B)) * p["rr_cv"][:, None], resp + rng.normal(0, 1, (n, B)) * p["rr_cv"][:, None] * 0.5)
    rr = np.clip(rr0[:, None] * np.exp(jitter), 0.3, 2.2)
    rr = rr * (rr0 / rr.mean(axis=1))[:, None]          # keep the intended mean rate
    t = -_POST - rng.uniform(0, 1, (n, 1)) * rr0[:, None] + np.cumsum(rr, axis=1)
    return np.where(t < seconds + _PRE, t, np.nan)


def render(p: dict[str, np.ndarray], device: DeviceProfile, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Signals (n, T, 12) in mV and beat times (n, B) for the record parameters `p`."""
    n, fs, T = len(p["hr"]), device.fs, device.n_samples
    tmpl = _templates(p, fs)                                           # (n, L, 3)
    Lpre = int(round(_PRE * fs)); Lpost = int(round(_POST * fs))
    beats = _beat_times(p, device.seconds, rng)
    # fractional impulse train on a grid whose index 0 is time -POST
    M = T + Lpre + Lpost
    pos = (beats + _POST) * fs
    ok = np.isfinite(pos) & (pos >= 0) & (pos < M - 1)
    pos = np.where(ok, pos, 0.0)
    i0 = np.floor(pos).astype(np.int64); frac = pos - i0
    amp = (1.0 + 0.04 * rng.normal(0, 1, pos.shape)) * ok
    rows = np.arange(n)[:, None] * M
    imp = (np.bincount((rows + i0).ravel(), (amp * (1 - frac)).ravel(), minlength=n * M)
           + np.bincount((rows + i0 + 1).ravel(), (amp * frac).ravel(), minlength=n * M)).reshape(n, M)
    N = sfft.next_fast_len(M + tmpl.shape[1])
    spec = sfft.rfft(imp, n=N, axis=1)[:, :, None] * sfft.rfft(tmpl, n=N, axis=1)
    dip = sfft.irfft(spec, n=N, axis=1)[:, Lpre + Lpost: Lpre + Lpost + T]   # (n, T, 3); output time s/fs
    t = np.arange(T) / fs
    # AF fibrillatory waves: three close frequencies in 4-9 Hz, slowly modulated (rendered for AF rows only)
    af = np.flatnonzero(p["AF"])
    if af.size:
        m = af.size
        f0 = rng.uniform(4.5, 8.0, (m, 1))
        fw = sum(rng.uniform(0.5, 1.0, (m, 1)) * np.sin(2 * np.pi * (f0 + df) * t[None, :] + rng.uniform(0, 2 * np.pi, (m, 1)))
                 for df in (-0.6, 0.0, 0.7)) / 2.0
        fw = fw * rng.uniform(0.04, 0.09, (m, 1)) * (1 + 0.3 * np.sin(2 * np.pi * 0.25 * t))[None, :]
        dip[af] += fw[:, :, None] * _direction(100.0, 50.0)
    nl = len(LEADS)
    gains = np.exp(rng.normal(0, device.gain_sd, (n, 1, nl)))
    leads = lead_matrix()[None]                                        # (1, 3, 12)
    if np.any(p["placement"] != 0) or np.any(p["contact"] != 1):       # the patient's own electrode frame
        leads = _rotation(p["placement"]) @ leads * p["contact"][:, None, :]
    x = np.matmul(dip.astype(np.float32), (leads * gains).astype(np.float32))   # (n, T, 12)
    # device noise. Baseline wander: 3 slow sinusoids (0.05-0.5 Hz) mixed into the leads at random.
    if device.wander_mv > 0:
        f = rng.uniform(0.05, 0.5, (n, 1, 3))
        phase = 2 * np.pi * f * t[None, :, None]                      # in place from here: the same float64 steps,
        phase += rng.uniform(0, 2 * np.pi, (n, 1, 3))                 # without two more (n, T, 3) temporaries
        slow = np.sin(phase, out=phase).astype(np.float32)
        mix = (device.wander_mv * rng.uniform(-1.0, 1.0, (n, 3, nl))).astype(np.float32)
        x += np.matmul(slow, mix)
    if device.muscle_mv > 0:
        level = (device.muscle_mv * rng.uniform(0.5, 1.5, (n, 1, 1))).astype(np.float32)
        noise = rng.standard_normal((n, T, nl), dtype=np.float32)      # drawn after the level, as always
        noise *= level                                                  # in place: one (n, T, 12) array, not two
        x += noise
    if device.powerline_mv > 0 and device.powerline_hz < fs / 2:
        w = 2 * np.pi * device.powerline_hz * t
        basis = np.stack([np.sin(w), np.cos(w)], axis=1).astype(np.float32)                    # (T, 2)
        ph = rng.uniform(0, 2 * np.pi, (n, 1, 1)) + rng.normal(0, 0.2, (n, 1, nl))
        amp = device.powerline_mv * rng.uniform(0.5, 1.5, (n, 1, nl))
        x += np.matmul(basis[None], np.concatenate([amp * np.cos(ph), amp * np.sin(ph)], axis=1).astype(np.float32))
    return x, beats


def synthesize_records(traits: pd.DataFrame, patient_of: np.ndarray, labels: np.ndarray, device: DeviceProfile,
                       rng: np.random.Generator, *, source: str, record_ids: list[str], patient_ids: list[str]) -> ECGRecords:
    """Render one record per entry of `patient_of` (row index into traits) with the given labels."""
    tr = traits.iloc[patient_of].reset_index(drop=True)
    p = record_params(tr, labels, rng)
    xs, bs = [], []
    for lo in range(0, len(labels), CHUNK):  # bounded memory; the draws stay in one stream, so chunking is seeded too
        x_c, b_c = render({k: v[lo:lo + CHUNK] for k, v in p.items()}, device, rng)
        xs.append(x_c); bs.append(b_c)
    x = np.concatenate(xs)
    B = max(b.shape[1] for b in bs)
    beats = np.concatenate([np.pad(b, ((0, 0), (0, B - b.shape[1])), constant_values=np.nan) for b in bs])
    sinus_normal = ~(p["SB"] | p["ST"] | p["AF"])
    inside = np.where((beats >= 0) & (beats < device.seconds), beats, np.nan)
    rr = np.diff(inside, axis=1)
    meta = pd.DataFrame({c: pd.Series([None] * len(labels), dtype=object) for c in META_COLUMNS})
    meta["record_id"] = record_ids
    meta["patient_id"] = [patient_ids[i] for i in patient_of]
    meta["source"] = f"synthetic:{source}"
    meta["fs_original"] = float(device.fs)
    meta["n_original"] = device.n_samples
    meta["age"] = tr["age"].to_numpy(dtype=float)
    meta["sex"] = tr["sex"].to_numpy(dtype=object)
    meta["snomed"] = ""
    meta["other_codes"] = ""
    meta["normal"] = (labels.sum(axis=1) == 0) & sinus_normal
    meta["path"] = None
    # ground truth of the generator (not present for real data)
    with np.errstate(invalid="ignore"):
        meta["hr_bpm"] = 60.0 / np.nanmean(rr, axis=1)
        meta["rr_cv"] = np.nanstd(rr, axis=1) / np.nanmean(rr, axis=1)
    meta["pr_ms"] = np.where(p["AF"], np.nan, 1000 * p["pr"])
    meta["qrs_ms"] = 1000 * p["qrs"]
    meta["qt_ms"] = 1000 * p["qt"]
    meta["device"] = device.name
    return ECGRecords(x, labels, np.ones_like(labels, dtype=bool), meta, fs=device.fs, units="mV")


def synthesize(n: int, *, seed: int = 0, population: Population | None = None, n_patients: int | None = None,
               patient_skew: float = 0.0, id_prefix: str = "SYN", patient_prefix: str = "P") -> ECGRecords:
    """`n` records (mV, population.device.fs, device.n_samples long) from `n_patients` patients (default n // 4).
    patient_skew in [0, 1): 0 = every patient has the population's class mix; towards 1 each patient's mix is
    drawn ever more unevenly around it (Dirichlet)."""
    if n < 1:
        raise MuprivError(f"synthesize: n must be >= 1, got {n}")
    pop = population or Population()
    rng = np.random.default_rng([int(seed), 0x5EC6])
    P = max(1, min(n, n_patients if n_patients is not None else max(1, n // 4)))
    traits = sample_traits(P, pop, rng)
    w = np.broadcast_to(pop.weight_vector(), (P, len(WEIGHT_NAMES)))
    if patient_skew > 0:
        conc = np.maximum(w * len(WEIGHT_NAMES) * (1.0 - min(patient_skew, 0.99)) / max(patient_skew, 1e-6), 1e-3)
        w = np.stack([rng.dirichlet(c) for c in conc])
    patient_of = np.sort(np.concatenate([np.arange(P), rng.integers(0, P, n - P)]))
    labels = sample_labels(w[patient_of], pop.combo_prob, rng)
    return synthesize_records(traits, patient_of, labels, pop.device, rng, source=pop.name,
                              record_ids=[f"{id_prefix}{i:06d}" for i in range(n)],
                              patient_ids=[f"{patient_prefix}{j:05d}" for j in range(P)])
