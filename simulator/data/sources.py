"""The catalogue of public ECG databases `mupriv data fetch` knows: where they live, how their files are checked,
their licence and how to cite them.

Both publishers list every file with a checksum, and the fetcher uses that list as the list of files to get, so
nothing here hard-codes a file count or a hash that a new release would make wrong:
- PhysioNet publishes `SHA256SUMS.txt` at the root of each project version (`<sha256>  training/cpsc_2018/g1/A0001.hea`);
- Zenodo publishes each record's JSON (`files[].key`, `.size`, `.checksum` = "md5:...").

A mirror (`--mirror URL` or $MUPRIV_DATA_MIRROR) replaces the base URL. It must serve the files under the same
relative paths and the same index: `SHA256SUMS.txt` for CinC 2021, the Zenodo record JSON as `record.json` for
CODE-15% (Zenodo's API URL is not below its files URL, so a mirror cannot copy it under its own name)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from simulator.errors import MuprivError

MIRROR_ENV = "MUPRIV_DATA_MIRROR"


@dataclass(frozen=True)
class Source:
    """One fetchable database. `subsets` maps the names a user types to the path prefix of their files in the index;
    `estimate` is the download size and record count per subset as published (an estimate, for the user's planning)."""

    name: str
    title: str
    base_url: str              # files are base_url + "/" + relative path
    index_url: str             # the publisher's checksum list (see module docstring)
    index_kind: str            # "sha256sums" or "zenodo"
    mirror_index: str          # the index's name under a mirror's base URL
    licence: str
    licence_url: str
    citation: str
    homepage: str
    subsets: dict[str, str] = field(default_factory=dict)
    estimate: dict[str, str] = field(default_factory=dict)

    def urls(self, mirror: str | None) -> tuple[str, str]:
        """(base URL of the files, URL of the checksum index), from the mirror when one is given."""
        if mirror:
            base = mirror.rstrip("/")
            return base, f"{base}/{self.mirror_index}"
        return self.base_url, self.index_url

    def about(self) -> str:
        """The text written next to the data as LICENSE.txt: what it is, its licence and how to cite it."""
        return (f"{self.title}\n{self.homepage}\n\nLicence: {self.licence} ({self.licence_url})\n"
                f"Use of this data requires attribution. Cite:\n\n{self.citation}\n")


CINC2021 = Source(
    name="cinc2021",
    title="PhysioNet/Computing in Cardiology Challenge 2021: Will Two Do? Varying Dimensions in Electrocardiography "
          "(version 1.0.3), training set",
    base_url="https://physionet.org/files/challenge-2021/1.0.3",
    index_url="https://physionet.org/files/challenge-2021/1.0.3/SHA256SUMS.txt",
    index_kind="sha256sums",
    mirror_index="SHA256SUMS.txt",
    licence="Creative Commons Attribution 4.0 International (CC BY 4.0)",
    licence_url="https://creativecommons.org/licenses/by/4.0/",
    citation=("Reyna MA, Sadr N, Perez Alday EA, Gu A, Shah AJ, Robichaux C, Rad AB, Elola A, Seyedi S, Ansari S, "
              "Ghanbari H, Li Q, Sharma A, Clifford GD, Sameni R. Will Two Do? Varying Dimensions in "
              "Electrocardiography: The PhysioNet/Computing in Cardiology Challenge 2021. Computing in Cardiology "
              "2021; 48: 1-4.\n\nPerez Alday EA, Gu A, Shah AJ, Robichaux C, Wong AI, Liu C, Liu F, Rad AB, Elola A, "
              "Seyedi S, Li Q, Sharma A, Clifford GD, Reyna MA. Classification of 12-lead ECGs: the "
              "PhysioNet/Computing in Cardiology Challenge 2020. Physiological Measurement 2020; 41(12): 124003.\n\n"
              "Goldberger A, et al. PhysioBank, PhysioToolkit, and PhysioNet. Circulation 2000; 101(23): e215-e220."),
    homepage="https://physionet.org/content/challenge-2021/1.0.3/",
    subsets={"cpsc2018": "training/cpsc_2018/", "cpsc-extra": "training/cpsc_2018_extra/",
             "georgia": "training/georgia/", "ptb-xl": "training/ptb-xl/",
             "chapman-shaoxing": "training/chapman_shaoxing/", "ningbo": "training/ningbo/"},
    # record counts from the Challenge description (Reyna et al. 2021); sizes are estimates at ~120-180 kB a record
    estimate={"cpsc2018": "6,877 records, about 1 GB", "cpsc-extra": "3,453 records, about 0.5 GB",
              "georgia": "10,344 records, about 1.3 GB", "ptb-xl": "21,837 records, about 2.7 GB",
              "chapman-shaoxing": "10,247 records, about 1.3 GB", "ningbo": "34,905 records, about 4.3 GB"},
)

CODE15 = Source(
    name="code15",
    title="CODE-15%: a large scale annotated dataset of 12-lead ECGs (Zenodo record 4916206)",
    base_url="https://zenodo.org/records/4916206/files",
    index_url="https://zenodo.org/api/records/4916206",
    index_kind="zenodo",
    mirror_index="record.json",
    licence="Creative Commons Attribution 4.0 International (CC BY 4.0)",
    licence_url="https://creativecommons.org/licenses/by/4.0/",
    citation=("Ribeiro AH, Paixao GMM, Lima EM, Horta Ribeiro M, Pinto Filho MM, Gomes PR, Oliveira DM, Meira Jr W, "
              "Schon TB, Ribeiro ALP. CODE-15%: a large scale annotated dataset of 12-lead ECGs (1.0.0). Zenodo 2021. "
              "https://doi.org/10.5281/zenodo.4916206\n\n"
              "Lima EM, Ribeiro AH, Paixao GMM, et al. Deep neural network-estimated electrocardiographic age as a "
              "mortality predictor. Nature Communications 2021; 12: 5117."),
    homepage="https://zenodo.org/records/4916206",
    subsets={f"{i}": f"exams_part{i}." for i in range(18)},
    estimate={"part": "about 19,000 exams and 1.7 GB zipped (3.9 GB as HDF5) per part, 18 parts; exams.csv about 30 MB"},
)

SOURCES: dict[str, Source] = {s.name: s for s in (CINC2021, CODE15)}


def source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise MuprivError(f"unknown database {name!r}; choose one of {', '.join(SOURCES)}") from None


def mirror_from_env(mirror: str | None) -> str | None:
    """The --mirror option, else $MUPRIV_DATA_MIRROR, else None (the publisher)."""
    return mirror or os.environ.get(MIRROR_ENV) or None


def parse_selection(src: Source, subset: str | None, parts: str | None) -> list[str]:
    """The subsets a user asked for, validated: CinC 2021 takes --subset (comma-separated database names, default
    all six), CODE-15% takes --parts (comma-separated part numbers 0-17, required: each part is 1.7 GB)."""
    if src.name == "code15":
        if subset:
            raise MuprivError("code15: --subset is for cinc2021; choose CODE-15% parts with --parts 0,1,...")
        if not parts:
            raise MuprivError("code15: give --parts (e.g. --parts 0 or --parts 0,1,2; 0-17, about 1.7 GB each)")
        chosen = [p.strip() for p in parts.split(",") if p.strip()]
        bad = [p for p in chosen if p not in src.subsets]
        if bad:
            raise MuprivError(f"code15: --parts {','.join(bad)} not a part number; parts are 0-17")
        return sorted(set(chosen), key=int)
    if parts:
        raise MuprivError(f"{src.name}: --parts is for code15; choose databases with --subset")
    chosen = [s.strip() for s in (subset or ",".join(src.subsets)).split(",") if s.strip()]
    bad = [s for s in chosen if s not in src.subsets]
    if bad:
        raise MuprivError(f"{src.name}: --subset {','.join(bad)} unknown; choose from {', '.join(src.subsets)}")
    return [s for s in src.subsets if s in chosen]
