"""A study config: validation (schema + names + override keys), defaults, and the training jobs it implies.

Used by the Snakefile (workflow/rules/common.smk), flowrl-status, flowrl-plan and the tests:

    study = load_study(yaml.safe_load(open("config/default.yaml")))   # or load_study_file("config/default.yaml")
    for job in study.jobs(): print(job.algo, job.tasks, job.seeds)

The keys, their meaning and their defaults are the schema's, workflow/schemas/study.schema.yaml: `default:`
entries are filled in while the config is checked against it, as snakemake's validate(config, schema,
set_default=True) fills them. Run directories: runs/<study>/<algo>/<task_slug>/seed<seed>/ (task_slug:
flowrl.tasknames, dmc:cartpole-balance -> dmc_cartpole-balance), where <algo> is the name used in `algos`
(a registered algorithm or a variant).
"""

from __future__ import annotations

import copy
import dataclasses
import shlex
from pathlib import Path

import yaml

from flowrl.tasknames import split_name, suite_of, task_slug

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "study.schema.yaml"

# Settings the workflow sets itself for every run; a study may not override them.
WORKFLOW_OWNED_KEYS = {"algo", "task", "seed", "steps", "eval_every", "eval_episodes"}


class StudyError(ValueError):
    """A study config that cannot run, with what to change."""


class StudyFileError(StudyError):
    """A study file that cannot be read or used, with what to do."""


def override_args(overrides: dict) -> list[str]:
    """{'agent.hidden_dim': 64, 'device': 'cpu'} -> ['agent.hidden_dim=64', 'device=cpu'] (YAML values)."""
    args = []
    for key, value in overrides.items():
        text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
        if text.endswith("\n...") or text.endswith("..."):  # safe_dump of a scalar appends a document end marker
            text = text.rsplit("\n", 1)[0].strip()
        args.append(f"{key}={text}")
    return args


@dataclasses.dataclass
class TrainJob:
    """One training job: one algorithm (or variant) on one task, or on a pack of tasks with the same shapes
    trained as one batched model, for one or more seeds."""

    algo: str  # name in `algos`: run directories are runs/<study>/<algo>/...
    base_algo: str  # registered algorithm that flowrl-train runs
    tasks: list[str]
    seeds: list[int]
    steps: int
    overrides: dict
    resources: dict
    pack_mode: str  # single | batched | parallel | sequential

    @property
    def slug(self) -> str:
        """The job's name in paths: the task's run directory name; a pack's joined with '+'."""
        return "+".join(task_slug(t) for t in self.tasks)

    @property
    def seeds_label(self) -> str:
        return "-".join(str(s) for s in self.seeds)

    @property
    def suite(self) -> str:
        return suite_of(self.tasks[0])  # the tasks of a pack share their suite (checked)

    @property
    def rule(self) -> str:
        """The Snakefile rule that trains it: HumanoidBench tasks have their own, for their own software."""
        return "train_hb" if self.suite == "hb" else "train"


class Study:
    """A checked study config, its defaults filled in (load_study makes one): its runs and training jobs."""

    def __init__(self, config: dict):
        self.config = config
        self.name: str = config["study"]
        self.algos: list[str] = list(config["algos"])
        self.tasks: list[str] = list(config["tasks"])
        seeds = config["seeds"]
        self.seeds: list[int] = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        self.variants: dict = config["variants"]
        self.seeds_per_job: int = config["seeds_per_job"]
        self.pack_mode: str = config["pack_mode"]
        self.task_packs: list[list[str]] = [list(p) for p in config["task_packs"]]

    # ------------------------------------------------------------------ per run settings
    def base_algo(self, algo: str) -> str:
        return self.variants[algo]["algo"] if algo in self.variants else algo

    def steps_for(self, task: str) -> int:
        steps = self.config["steps"]
        return int(steps[task]) if isinstance(steps, dict) else int(steps)

    def overrides_for(self, algo: str, task: str | None = None) -> dict:
        """Study overrides, then the variant's, then `suite_overrides` for the task's suite and this algorithm (name
        in `algos`); eval settings come from the study's own keys."""
        out = {"eval_every": self.config["eval_every"], "eval_episodes": self.config["eval_episodes"]}
        out.update(self.config["overrides"])
        out.update(self.variants.get(algo, {}).get("overrides") or {})
        if task is not None:
            out.update(self.config["suite_overrides"].get(suite_of(task), {}).get(algo) or {})
        return out

    def resources_for(self, task: str, n_runs: int, mode: str) -> dict:
        res = dict(self.config["resources"])
        res.update(self.config["suite_resources"].get(suite_of(task), {}))
        per_run = res.pop("packed_run_mem_mb", None) or res["mem_mb"]
        if mode in ("batched", "parallel"):  # every run keeps its own replay buffer and environments
            res["mem_mb"] = res["mem_mb"] + per_run * (n_runs - 1)
        if mode == "parallel":
            res["cpus_per_task"] = res["cpus_per_task"] * n_runs
        if mode == "sequential":
            res["runtime"] = res["runtime"] * n_runs
        return res

    def run_dir(self, algo: str, task: str, seed: int) -> str:
        return f"runs/{self.name}/{algo}/{task_slug(task)}/seed{seed}"

    # ------------------------------------------------------------------ jobs
    def pack_mode_for(self, algo: str, n_runs: int, gpu: int, batched_ok) -> str:
        if n_runs == 1:
            return "single"
        if self.pack_mode != "auto":
            return self.pack_mode
        if batched_ok(self.base_algo(algo)):
            return "batched"
        return "parallel" if gpu > 0 else "sequential"

    def task_groups(self, algo: str, batched_ok) -> list[list[str]]:
        """The tasks of each job of `algo`: a task pack where the algorithm trains batched, else one task a job."""
        if self.pack_mode not in ("auto", "batched") or not batched_ok(self.base_algo(algo)):
            return [[t] for t in self.tasks]
        packed = {t: pack for pack in self.task_packs for t in pack}
        groups: list[list[str]] = []
        for task in self.tasks:
            group = packed.get(task, [task])
            if group not in groups:
                groups.append(group)
        return groups

    def jobs(self, batched_ok=lambda algo: False) -> list[TrainJob]:
        jobs = []
        n = self.seeds_per_job
        for algo in self.algos:
            for tasks in self.task_groups(algo, batched_ok):
                for i in range(0, len(self.seeds), n):
                    seeds = self.seeds[i : i + n]
                    runs = len(tasks) * len(seeds)
                    gpu = self.resources_for(tasks[0], 1, "single").get("gpu", 0)
                    mode = self.pack_mode_for(algo, runs, gpu, batched_ok)
                    jobs.append(
                        TrainJob(
                            algo,
                            self.base_algo(algo),
                            tasks,
                            seeds,
                            self.steps_for(tasks[0]),
                            self.overrides_for(algo, tasks[0]),
                            self.resources_for(tasks[0], runs, mode),
                            mode,
                        )
                    )
        return jobs

    def expected(self) -> dict:
        """What the analysis should find (flowrl.analysis --expect)."""
        steps = self.config["steps"]
        return {
            "algos": self.algos,
            "tasks": self.tasks,
            "seeds": self.seeds,
            "steps": {t: self.steps_for(t) for t in self.tasks} if isinstance(steps, dict) else int(steps),
        }


# ---------------------------------------------------------------------------------------- loading
def _where(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return f"config key '{path}'" if path else "config"


def _schema_message(error) -> str:
    if error.validator == "additionalProperties" and not error.absolute_path:
        allowed = sorted(error.schema.get("properties", {}))
        return f"{error.message}. Valid top-level keys: {', '.join(allowed)}"
    if error.validator == "oneOf":
        # e.g. seeds: 0 -> report the clearest branch
        # report the branch that matched the value's type (e.g. "0 is less than the minimum of 1")
        specific = [e for e in error.context if e.validator != "type"] or list(error.context) or [error]
        best = min(specific, key=lambda e: len(e.message))
        return f"{_where(error)}: {best.message} (expected {error.schema.get('description', 'see the schema')})"
    return f"{_where(error)}: {error.message}"


def _schema() -> dict:
    if not SCHEMA_PATH.is_file():
        raise StudyFileError(
            f"study files need the repository checkout ({SCHEMA_PATH} is missing); run from a clone "
            "of flowrl-bench, or give flowrl-status a runs folder instead"
        )
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _filling_validator(schema: dict):
    """A Draft 2020-12 validator that, wherever it checks an object's `properties`, first sets each absent property
    that has a `default:` (a copy of it): the jsonschema FAQ's recipe, which snakemake.utils.validate also uses."""
    import jsonschema
    from jsonschema import validators

    check_properties = jsonschema.Draft202012Validator.VALIDATORS["properties"]

    def fill_then_check(validator, properties, instance, subschema):
        if validator.is_type(instance, "object"):
            for name, prop in properties.items():
                if "default" in prop and name not in instance:
                    instance[name] = copy.deepcopy(prop["default"])
        yield from check_properties(validator, properties, instance, subschema)

    return validators.extend(jsonschema.Draft202012Validator, {"properties": fill_then_check})(schema)


def validate_schema(config: dict) -> None:
    """Check `config` against the schema, filling in its defaults (in place)."""
    errors = sorted(_filling_validator(_schema()).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(f"  - {_schema_message(e)}" for e in errors)
        raise StudyError(
            f"study config for '{config.get('study', '?')}' is invalid "
            f"(schema: workflow/schemas/study.schema.yaml):\n{lines}"
        )


def _has_known_suite(task: str) -> bool:
    try:
        split_name(task)
    except ValueError:
        return False
    return True


def _each_task(tasks: list[str], check) -> list[str]:
    """'tasks: <message>' for every task on which `check(task)` raises ValueError."""
    problems = []
    for task in tasks:
        try:
            check(task)
        except ValueError as exc:
            problems.append(f"tasks: {exc}")
    return problems


def check_suites(study: Study) -> None:
    """Every task names a known suite, which its run directories' names need (check_names, which checks the tasks
    themselves where their simulators are installed, reports these among its problems)."""
    problems = _each_task(study.tasks, split_name)
    if problems:
        raise StudyError(f"study '{study.name}' cannot run:\n" + "\n".join(f"  - {p}" for p in problems))


def check_names(study: Study, available_agents: list[str], validate_task) -> None:
    """Algorithm, variant and task names; raises StudyError listing every problem."""
    suited = [t for t in study.tasks if _has_known_suite(t)]  # the others are reported by _task_problems
    problems = [
        *_algo_problems(study, available_agents),
        *_task_problems(study, validate_task),
        *_pack_problems(study, suited),
        *_override_problems(study, suited),
    ]
    if problems:
        raise StudyError(f"study '{study.name}' cannot run:\n" + "\n".join(f"  - {p}" for p in problems))


def _algo_problems(study: Study, available_agents: list[str]) -> list[str]:
    """Unknown algorithms and variants, and variants that shadow a registered algorithm."""
    problems = []
    for name, variant in study.variants.items():
        if variant["algo"] not in available_agents:
            problems.append(
                f"variant '{name}': unknown algorithm '{variant['algo']}' (available: {', '.join(available_agents)})"
            )
        if name in available_agents and variant["algo"] != name:
            problems.append(f"variant '{name}' shadows the registered algorithm '{name}'; give it another name")
    for algo in study.algos:
        if algo not in study.variants and algo not in available_agents:
            import difflib

            close = difflib.get_close_matches(algo, available_agents + list(study.variants), n=2, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            problems.append(
                f"algos: unknown algorithm '{algo}'.{hint} Registered: {', '.join(available_agents)}; "
                f"variants: {', '.join(study.variants) or 'none'}"
            )
    return problems


def _task_problems(study: Study, validate_task) -> list[str]:
    """Unknown tasks, budgets that do not match the tasks, and run directory names two tasks share."""
    problems = _each_task(study.tasks, validate_task)
    steps = study.config["steps"]
    if isinstance(steps, dict):
        absent = [t for t in study.tasks if t not in steps]
        extra = [t for t in steps if t not in study.tasks]
        if absent:
            problems.append(f"steps: no budget for task(s) {absent}; give one per task or a single number")
        if extra:
            problems.append(f"steps: budget for task(s) {extra} that are not in tasks")
    suited = [t for t in study.tasks if _has_known_suite(t)]  # the others are reported above
    slugs: dict[str, str] = {}
    for task in suited:
        if task_slug(task) in slugs:
            problems.append(
                f"tasks: '{task}' and '{slugs[task_slug(task)]}' share the run directory name {task_slug(task)}"
            )
        slugs[task_slug(task)] = task
    return problems


def _pack_problems(study: Study, suited: list[str]) -> list[str]:
    """Task packs naming unknown tasks or a task twice, mixing suites or mixing budgets."""
    problems = []
    steps = study.config["steps"]
    seen: dict[str, int] = {}
    for i, pack in enumerate(study.task_packs):
        where = f"task_packs[{i}]"
        unknown = [t for t in pack if t not in study.tasks]
        if unknown:
            problems.append(f"{where}: {unknown} not in tasks")
        twice = [t for t in pack if t in seen]
        if twice:
            problems.append(f"{where}: {twice} already in task_packs[{seen[twice[0]]}]; a task can be in one pack")
        seen.update({t: i for t in pack})
        if len({suite_of(t) for t in pack if t in suited}) > 1:
            problems.append(f"{where}: tasks of different suites ({pack}) run in different software; pack them apart")
        budgets = {study.steps_for(t) for t in pack if t in study.tasks and (not isinstance(steps, dict) or t in steps)}
        if len(budgets) > 1:
            problems.append(f"{where}: tasks trained together need the same steps budget")
    return problems


def _override_problems(study: Study, suited: list[str]) -> list[str]:
    """suite_overrides of absent algorithms or suites; overrides of keys the study itself sets."""
    problems = []
    suite_overrides = study.config["suite_overrides"]
    for suite, per_algo in suite_overrides.items():
        unknown = sorted(set(per_algo) - set(study.algos))
        if unknown:
            problems.append(
                f"suite_overrides.{suite}: {unknown} not in algos ({', '.join(study.algos)}); settings "
                "are given per algorithm (or variant) name"
            )
        if not any(suite_of(t) == suite for t in suited):
            problems.append(f"suite_overrides.{suite}: the study has no {suite}: task")
    for name, overrides in (
        [("overrides", study.config["overrides"])]
        + [(f"variants.{v}.overrides", d.get("overrides") or {}) for v, d in study.variants.items()]
        + [
            (f"suite_overrides.{s}.{a}", o or {})
            for s, per_algo in suite_overrides.items()
            for a, o in per_algo.items()
        ]
    ):
        owned = sorted(WORKFLOW_OWNED_KEYS & set(overrides))
        if owned:
            problems.append(
                f"{name}: {owned} are set by the study itself (keys algos, tasks, seeds, steps, "
                "eval_every, eval_episodes); remove them from the overrides"
            )
    return problems


def check_overrides(study: Study, resolve) -> None:
    """Resolve every (algorithm, task) run config so a bad override key or value fails before submission.

    `resolve(settings_dict)` builds the run config (flowrl.config.resolve_config after nesting)."""
    problems = []
    first_of_suite: dict[str, str] = {}
    for task in study.tasks:
        first_of_suite.setdefault(suite_of(task), task)
    for job in study.jobs():
        if job.seeds != study.seeds[: len(job.seeds)] or job.tasks[0] not in first_of_suite.values():
            continue  # the settings are the same for every task of a suite and seed pack of this algorithm
        settings = {
            "algo": job.base_algo,
            "task": job.tasks[0],
            "seed": job.seeds[0],
            "steps": job.steps,
            **job.overrides,
        }
        try:
            resolve(settings)
        except (ValueError, TypeError) as exc:
            where = f"variants.{job.algo}.overrides or overrides" if job.algo in study.variants else "overrides"
            if job.algo in study.config["suite_overrides"].get(job.suite, {}):
                where += f" or suite_overrides.{job.suite}.{job.algo}"
            problems.append(f"{job.algo}: {exc} (check {where})")
    if problems:
        unique = list(dict.fromkeys(problems))
        raise StudyError(f"study '{study.name}': run settings are invalid:\n" + "\n".join(f"  - {p}" for p in unique))


def check_packing(study: Study, batched_ok) -> None:
    if study.pack_mode != "batched" or study.seeds_per_job == 1:
        return
    bad = sorted({study.base_algo(a) for a in study.algos if not batched_ok(study.base_algo(a))})
    if bad:
        raise StudyError(
            f"pack_mode: batched, but {bad} cannot train several seeds as one batched model; "
            "use pack_mode: auto (batched where supported), parallel or sequential"
        )


TEXT_KEYS = {"study", "description", "algos", "tasks", "software", "extra_args", "algo", "pack_mode"}


def normalize(value, key: str | None = None):
    """Typed values for strings that came from the command line (snakemake --config seeds=[0,1] gives
    ['0', '1']): numbers and booleans are parsed as YAML, as flowrl-train parses key=value overrides."""
    if key in TEXT_KEYS:
        return value
    if isinstance(value, dict):
        return {k: normalize(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(parsed, (bool, int, float)) or parsed is None and value.strip() in ("null", "~"):
            return parsed
    return value


def load_study(config: dict, semantic: bool = True) -> Study:
    """Validate `config` and return the Study, its defaults filled in. Checked: the schema, then with `semantic`
    the names, override keys and packs (the workflow's jobs skip those: the main process checked them), else only
    the tasks' suites, which the run directories' names need."""
    config = copy.deepcopy(normalize(dict(config)))  # defaults are filled in place: never into the caller's dicts
    validate_schema(config)
    study = Study(config)
    if not semantic:
        check_suites(study)
        return study
    import logging

    root_handlers = list(logging.root.handlers)  # dm_control's absl adds a root handler on import
    try:
        from flowrl.agents.registry import available_agents
        from flowrl.config import nest, resolve_config
        from flowrl.envs import validate_task

        check_names(study, available_agents(), validate_task)
        check_overrides(study, lambda settings: resolve_config(nest(settings)))
        check_packing(study, batched_supported)
        check_pack_shapes(study)
    finally:
        logging.root.handlers[:] = root_handlers
    return study


def check_pack_shapes(study: Study) -> None:
    """Tasks of a pack must share shapes and action bounds; checked here where their simulator is installed
    (HumanoidBench packs are checked when their job starts, in their own software)."""
    from flowrl.envs import SuiteNotInstalledError
    from flowrl.multiseed import check_same_shapes
    from flowrl.train import RunError

    for i, pack in enumerate(study.task_packs):
        try:
            check_same_shapes(pack)
        except SuiteNotInstalledError:
            continue
        except RunError as exc:
            raise StudyError(f"study '{study.name}': task_packs[{i}]: {exc}") from None


def batched_supported(algo: str) -> bool:
    try:
        from flowrl.multiseed import supports_members
    except ImportError:
        return False
    return supports_members(algo)


def shell_quote_all(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def load_study_file(path: str | Path) -> Study:
    """The Study of a study YAML file, schema-checked with its defaults filled in; the names are not resolved
    against the registry (which keeps flowrl-status and flowrl-plan quick). Raises StudyFileError."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise StudyFileError(f"cannot read study file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise StudyFileError(f"study file {path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict) or "study" not in config:
        raise StudyFileError(f"{path} is not a study file (no 'study:' key; see config/default.yaml)")
    try:
        return load_study(config, semantic=False)
    except StudyFileError:
        raise
    except StudyError as exc:
        raise StudyFileError(str(exc)) from None
