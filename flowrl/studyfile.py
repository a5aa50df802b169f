"""A workflow study file (config/*.yaml) read outside Snakemake, for `flowrl-status` and `flowrl-plan`.

The study's rules live in workflow/scripts/flowrl_study.py (what the Snakefile uses); this imports that module
from the repository checkout, so both commands see exactly the runs and jobs the workflow would make. The names
are only schema-checked here (not resolved against the registry), which keeps both commands quick.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"


class StudyFileError(ValueError):
    """A study file that cannot be read, with what to do."""


def study_module():
    if not (SCRIPTS / "flowrl_study.py").is_file():
        raise StudyFileError(f"study files need the repository checkout ({SCRIPTS / 'flowrl_study.py'} is missing); "
                             "run from a clone of flowrl-bench, or give a runs folder instead")
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    import flowrl_study

    return flowrl_study


def load_study_file(path: str | Path):
    """The flowrl_study.Study of a study YAML file (defaults filled in, schema-checked)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise StudyFileError(f"cannot read study file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise StudyFileError(f"study file {path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict) or "study" not in config:
        raise StudyFileError(f"{path} is not a study file (no 'study:' key; see config/default.yaml)")
    fs = study_module()
    try:
        return fs.load_study(config, semantic=False)
    except fs.StudyError as exc:
        raise StudyFileError(str(exc)) from None
