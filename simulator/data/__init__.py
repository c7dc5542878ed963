"""ECG data layer: readers (WFDB / CODE-15 / npz), preprocessing, cache, synthetic generator, cohorts."""
from simulator.data.cache import RecordCache, default_cache_dir
from simulator.data.code15 import read_code15
from simulator.data.cohort import (Client, Cohort, SyntheticCohortSpec, balanced_subset, client_rng, split_cohort,
                                   synthesize_cohort_raw, synthetic_cohort, train_test_split)
from simulator.data.load import load_records
from simulator.data.npzio import load_records_npz, save_records
from simulator.data.preprocess import PreprocessConfig, preprocess_records, preprocess_signal
from simulator.data.records import META_COLUMNS, ECGRecords
from simulator.data.snomed import CLASS_CODES, NSR_CODE
from simulator.data.synthetic import DeviceProfile, Population, synthesize
from simulator.data.wfdb_reader import read_wfdb_folder
from simulator.data.wfdb_writer import write_wfdb

__all__ = [
    "CLASS_CODES", "Client", "Cohort", "DeviceProfile", "ECGRecords", "META_COLUMNS", "NSR_CODE", "Population",
    "PreprocessConfig", "RecordCache", "SyntheticCohortSpec", "balanced_subset", "client_rng", "default_cache_dir",
    "load_records", "load_records_npz", "preprocess_records", "preprocess_signal", "read_code15", "read_wfdb_folder",
    "save_records", "split_cohort", "synthesize", "synthesize_cohort_raw", "synthetic_cohort", "train_test_split",
    "write_wfdb",
]
