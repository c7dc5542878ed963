"""The data issue's learnability check: a TDSSM trained on a synthetic source set separates the six classes
on held-out synthetic records of other patients (macro-AUROC > 0.85), at a CI-sized length and width.

Settings, and why (each measured on one core with 640 training records and d_model 32):
- 100 Hz, 1,024 samples (the whole 10.24-s record), 40 epochs, lr 1e-2. Rate and rhythm are learned late:
  in a 45-epoch run AF is 0.50 after epoch 10 and 0.85 after epoch 30; at the paper's lr 3e-3, 30 epochs
  give 0.82 instead of 0.90.
- Signals in mV (scale "none"). Min-max per record (the paper's scaling) puts each record's isoelectric line
  at its own level in [0, 1] (0.32-0.69 here); the per-time-step encoder and the causal S4D convolution carry
  that offset into the pooled features, and the model has to learn to cancel it first. With it, 12 epochs
  leave SB/ST/AF at chance (0.54/0.48/0.46; in mV SB/ST are 0.96/0.88), 30 epochs give 0.77 and 60 epochs
  0.89: too slow for CI. Subtracting the offset again gives what mV gives (0.90 at 30 epochs); adding a random
  offset to mV signals brings the failure back (SB 0.96 -> 0.73, ST 0.88 -> 0.68 at 12 epochs).
- No best-epoch selection: the held-out records are scored once, after the last epoch.
1dAVb (P wave ~120 ms earlier before each QRS) is the class the NCP decoder learns slowest: 0.62-0.75 over four
seed draws here, while a plain linear head on the same pooled features (a diagnostic, not the model) reaches
0.97 after 60 epochs. Its floor only asks for clearly better than chance."""
from __future__ import annotations

import time

import pytest
import torch

from simulator.core.labels import CLASSES
from simulator.core.model import ModelConfig, TDSSM
from simulator.core.phases import evaluate, full_training, train_phase
from simulator.data.preprocess import PreprocessConfig, preprocess_records
from simulator.data.synthetic import synthesize

PRE = PreprocessConfig(fs=100.0, length=1024, scale="none")
EPOCHS = 40
# Per-class floors, each under the lowest of four seed draws measured (RBBB/LBBB/SB 1.00, ST 0.98, AF 0.70,
# 1dAVb 0.62; these seeds: 1.00/1.00/1.00/0.98/0.90/0.64, macro 0.92, four draws 0.88-0.95).
FLOORS = {"RBBB": 0.9, "LBBB": 0.9, "SB": 0.9, "ST": 0.9, "AF": 0.6, "1dAVb": 0.55}


def train_and_score(train_seed: int = 101, test_seed: int = 202, model_seed: int = 0, epochs: int = EPOCHS):
    """Train on one synthetic population draw, score on another (other patients); returns (metrics, seconds)."""
    train = preprocess_records(synthesize(640, seed=train_seed), PRE).tensors()
    test = preprocess_records(synthesize(256, seed=test_seed, id_prefix="HELD", patient_prefix="H"), PRE).tensors()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_seed)
        model = TDSSM(ModelConfig(d_model=32))
    t = time.perf_counter()
    train_phase(model, full_training(epochs, lr=1e-2), train, None, seed=model_seed)
    return evaluate(model, test), time.perf_counter() - t


@pytest.fixture(scope="module")
def held_out():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_and_score()[0]
    finally:
        torch.set_num_threads(before)


def test_tdssm_separates_the_six_synthetic_classes(held_out):
    assert held_out.macro_auroc > 0.85, held_out.auroc


@pytest.mark.parametrize("cls", CLASSES)
def test_no_class_is_left_unlearned(held_out, cls):
    assert held_out.auroc[cls] > FLOORS[cls], held_out.auroc
