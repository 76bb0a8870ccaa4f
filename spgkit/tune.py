"""Tuned comparisons: every arm's hyperparameters searched alike and chosen on the few-shot
selection split, then trained again with the study's seeds and reported on test: the WSOL
benchmark's protocol, whose search code was never released.

:func:`tune` (``spgkit tune STUDY``), for each arm of the study:

1. **Plan.** ``study.search.trials`` configurations of the arm's space (:func:`space`), drawn
   by Optuna's random sampler seeded per configuration by (search seed, arm, index): the plan is
   the same whatever the scheduling and however often the tuner is killed and started again.
   Optuna stores the trials: a journal file in the search folder, or any Optuna storage URL that
   many machines share. A search is keyed by what its trials compute (the study's record, the
   space, the seed), so a changed study starts a new search in the same store; its trial folders
   would be the old search's, so it needs another ``--out`` (or ``--retrain``), and is refused
   before anything trains or the old search's report is touched.
2. **Train.** Every trial is an ordinary run folder (``<out>/<study>-search/<arm>/trial<k>``)
   trained once, with the study's first seed, through the executor (local or Ray): reuse, resume
   and locks apply as to any run.
3. **Tell.** A trial's value is its selection split's MaxBoxAccV2, or PxAP where the data has
   masks, read from the run's ``metrics.json``; a trial that diverged is a failure, not a zero.
4. **Choose and report.** Each arm's best trial (the earlier one on a tie) is trained with every
   seed of the study as the study ``<study>-tuned`` and reported on test like any study, its
   table saying how it was tuned. The search folder gets ``trials.csv``, ``search.md`` and
   ``figures/trials.png``.

Optuna is an extra (``pip install 'spgkit[tune]'``), imported only here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spgkit.config import BENCHMARK_SPACE, Arm, Param, Study
from spgkit.executors import ExecutorError, LocalExecutor, RayExecutor
from spgkit.figures import write_trials_figure
from spgkit.io import write_csv, write_text
from spgkit.plugins import Registry
from spgkit.runs import RunFolder, StudyFolder, mismatch, run_config, scored_with
from spgkit.study import check_study, checked_facts, refuse_conflicts, run_study, select_arms

#: The learning rate every arm searches (the benchmark's common hyperparameter).
LEARNING_RATE = Param("training.lr", "log", 1e-5, 1.0, source=f"{BENCHMARK_SPACE}; Murtaza et al. 2025 list the same")


class TuneError(ValueError):
    """A search that cannot go on as declared; the message names the arm and the cause."""


def default_space(arm: Arm, registry: Registry) -> tuple[Param, ...]:
    """The learning rate and every head's own ``search_space``, with paths inside the arm."""
    heads = tuple(
        dataclasses.replace(p, path=f"heads.{h.name}.args.{p.path}") for h in arm.heads for p in registry.head(h.name).search_space
    )
    return (LEARNING_RATE,) + heads


def space(study: Study, arm: Arm, registry: Registry) -> tuple[Param, ...]:
    """What ``arm`` searches: its :func:`default_space` with the search's ``common`` and then the
    arm's own ``spaces`` Params in place by path (:class:`~spgkit.config.Search`)."""
    params = list(default_space(arm, registry))
    for p in study.search.common + study.search.spaces.get(arm.name, ()):
        paths = [q.path for q in params]
        if p.path in paths:
            params[paths.index(p.path)] = p
        else:
            params.append(p)
    return tuple(params)


def with_values(arm: Arm, values: dict[str, Any], training: dict[str, Any] | None = None) -> Arm:
    """``arm`` with the searched ``values`` (by path inside the arm) in place, and ``training``
    fields (a search's own, such as fewer epochs) under them."""
    own = {**arm.training, **(training or {})}
    args = {h.name: dict(h.args) for h in arm.heads}
    for path, value in values.items():
        parts = path.split(".")
        if parts[0] == "training" and len(parts) == 2:
            own[parts[1]] = value
        elif parts[0] == "heads" and len(parts) == 4 and parts[2] == "args" and parts[1] in args:
            args[parts[1]][parts[3]] = value
        else:
            raise TuneError(f"arm {arm.name!r}: the search path {path!r} names no training field or argument of its heads {sorted(args)}")
    heads = tuple(dataclasses.replace(h, args=args[h.name]) for h in arm.heads)
    return dataclasses.replace(arm, heads=heads, training=own)


def suggest(trial, params: tuple[Param, ...]) -> dict[str, Any]:
    """Draw every param on an Optuna trial; a ``pair`` is drawn as its low, then its high above it."""
    values: dict[str, Any] = {}
    for p in params:
        if p.kind == "pair":
            low = trial.suggest_float(f"{p.path}.low", p.low, p.high)
            values[p.path] = (trial.suggest_float(f"{p.path}.high", low, p.high), low)
        elif p.kind == "choice":
            values[p.path] = trial.suggest_categorical(p.path, list(p.choices))
        elif p.kind == "int":
            values[p.path] = trial.suggest_int(p.path, int(p.low), int(p.high))
        else:
            values[p.path] = trial.suggest_float(p.path, p.low, p.high, log=p.kind == "log")
    return values


def values_of(params: tuple[Param, ...], drawn: dict[str, Any]) -> dict[str, Any]:
    """The configuration an Optuna trial's ``params`` (its stored draws) stand for."""
    return {
        p.path: (drawn[f"{p.path}.high"], drawn[f"{p.path}.low"]) if p.kind == "pair" else drawn[p.path] for p in params
    }


def _draws(p: Param) -> list[str]:
    return [f"{p.path}.low", f"{p.path}.high"] if p.kind == "pair" else [p.path]


def _hash(value: Any, length: int = 12) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


@dataclass
class Trial:
    """One planned configuration of an arm: its index in the plan, the Optuna trial storing it,
    what it sets, the arm it trains and its run folder."""

    arm: str
    index: int
    number: int
    values: dict[str, Any]
    trained: Arm
    run: RunFolder
    state: str = "RUNNING"
    value: float | None = None
    diverged: str | None = None
    objective: str | None = None


@dataclass
class TuneResult:
    """What :func:`tune` did: every arm's trials, its chosen one (None where every trial failed),
    the folders, and how each run was handled."""

    study: Study
    folder: StudyFolder
    trials: dict[str, list[Trial]]
    spaces: dict[str, tuple[Param, ...]]
    chosen: dict[str, Trial | None] = field(default_factory=dict)
    tuned: StudyFolder | None = None
    actions: dict[str, int] = field(default_factory=dict)  #: trial runs by what was done with them (``train``, ``done``...)


# --------------------------------------------------------------------------- plan


def open_storage(storage: str | None, folder: StudyFolder):
    """Optuna's store of the trials: a journal file (``folder/trials.journal`` by default, or the
    file ``storage`` names) or an Optuna storage URL (``sqlite:///...``, ``postgresql://...``)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is not None and "://" in storage:
        return storage
    path = Path(storage) if storage is not None else folder.path / "trials.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def search_key(study: Study, arm: Arm, params: tuple[Param, ...], facts: dict[str, Any]) -> str:
    """What a search's trials compute, hashed: the record of the arm's run at the search's training
    (seed and all), its space and the search's seed. A study changed in any of them is another search."""
    base = with_values(arm, {}, dict(study.search.training))
    record = scored_with(run_config(study, base, study.seeds[0], facts))
    space_ = [{k: v for k, v in dataclasses.asdict(p).items() if k != "source"} for p in params]
    return _hash({"record": record, "space": space_, "seed": study.search.seed})


def plan_arm(storage, study: Study, arm: Arm, params: tuple[Param, ...], key: str, folder: StudyFolder) -> tuple[Any, list[Trial]]:
    """The arm's Optuna study and its ``search.trials`` configurations, read from the store or drawn
    and stored there. Configuration ``k`` is drawn by a sampler seeded with (search seed, arm, k),
    so a plan cut short by a kill (a trial stored with only some of its draws: failed here, and
    drawn again) ends the same."""
    import optuna

    ostudy = optuna.create_study(study_name=f"{study.name}/{arm.name}/{key}", storage=storage, direction="maximize", load_if_exists=True)
    names = [name for p in params for name in _draws(p)]
    stored = _plans(ostudy, names)
    for index in range(study.search.trials):
        if index not in stored:
            ostudy.sampler = optuna.samplers.RandomSampler(seed=int(_hash([study.search.seed, arm.name, index], 8), 16))
            trial = ostudy.ask()
            trial.set_user_attr("plan", index)
            suggest(trial, params)
    stored = _plans(ostudy, names)
    return ostudy, [_trial(study, arm, params, index, stored[index], folder) for index in range(study.search.trials)]


def _plans(ostudy, names: list[str]) -> dict[int, Any]:
    """The stored trials by plan index (the first of each index with every draw); a trial left
    running with some draws missing, cut short by a kill, is marked failed."""
    import optuna

    stored: dict[int, Any] = {}
    for t in ostudy.get_trials(deepcopy=False):
        if "plan" in t.user_attrs and all(name in t.params for name in names):
            stored.setdefault(t.user_attrs["plan"], t)
        elif t.state == optuna.trial.TrialState.RUNNING:
            ostudy.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return stored


def _trial(study: Study, arm: Arm, params: tuple[Param, ...], index: int, stored, folder: StudyFolder) -> Trial:
    values = values_of(params, stored.params)
    trained = with_values(arm, values, dict(study.search.training))
    return Trial(arm.name, index, stored.number, values, trained, folder.run(arm.name, 0, trial=index), stored.state.name, stored.value)


def _end(p: Param, end: int) -> Any:
    """The value of ``p`` at the lower (0) or upper (-1) end of its range (a pair: its widest)."""
    if p.kind == "choice":
        return p.choices[end]
    if p.kind == "pair":
        return (p.high, p.low)
    return int((p.low, p.high)[end]) if p.kind == "int" else (p.low, p.high)[end]


def check_space(study: Study, arm: Arm, params: tuple[Param, ...], registry: Registry) -> None:
    """Refuse a space whose paths or bounds the arm cannot take, before anything trains: the arm is
    checked (:func:`~spgkit.study.check_study`: built, one training step) at both ends of its space."""
    for end, name in ((0, "lower"), (-1, "upper")):
        try:
            trial_arm = with_values(arm, {p.path: _end(p, end) for p in params}, dict(study.search.training))
            check_study(dataclasses.replace(study, arms=(trial_arm,), search=dataclasses.replace(study.search, spaces={})), registry)
        except ValueError as exc:  # StudyError, ConfigError, TuneError
            raise TuneError(f"search space of arm {arm.name!r} at its {name} end: {exc}") from None


# --------------------------------------------------------------------------- tell and choose


def objective_key(metrics: dict[str, Any]) -> str:
    """What a trial maximises: the selection split's PxAP where the data has masks, else its MaxBoxAccV2."""
    return "select_pxap" if "select_pxap" in metrics else "select_maxboxaccv2"


def tell(ostudy, trials: list[Trial], study: Study, facts: dict[str, Any]) -> None:
    """Store the result of every trial whose run finished with its configuration: its objective,
    or a failure where it diverged. A run that has not finished (or was scored otherwise) stays
    running in the store, for the next ``spgkit tune`` to finish."""
    import optuna

    for t in trials:
        if not t.run.metrics.exists():
            continue
        metrics = t.run.read_metrics()
        asked = scored_with(run_config(study, t.trained, study.seeds[0], facts))
        if "record" not in metrics or mismatch(metrics["record"], asked):
            continue
        t.diverged = metrics.get("diverged")
        t.objective = None if t.diverged else objective_key(metrics)
        if t.state != "RUNNING":
            continue
        if t.diverged:
            ostudy.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)  # another tuner may have told it
            t.state = "FAIL"
        else:
            t.value, t.state = float(metrics[objective_key(metrics)]), "COMPLETE"
            ostudy.tell(t.number, t.value, skip_if_finished=True)


def best(trials: list[Trial]) -> Trial | None:
    """The completed trial with the highest objective, the earlier one on a tie; None if none completed."""
    done = [t for t in trials if t.state == "COMPLETE"]
    return max(done, key=lambda t: (t.value, -t.index)) if done else None


# --------------------------------------------------------------------------- the search


def tune(
    study: Study, out: str | Path = "runs", *, registry: Registry | None = None, executor: LocalExecutor | RayExecutor | None = None,
    storage: str | None = None, progress: bool = True, retrain: bool = False, arms: list[str] | None = None, where: str = "",
) -> TuneResult:  # fmt: skip
    """Search every arm's hyperparameters (or only ``arms``'), then train each arm's best
    configuration with every seed and report it on test (the module's steps). Runs go through
    ``executor`` (local by default); ``storage`` is an Optuna storage URL or a journal file (default
    ``<out>/<study>-search/trials.journal``). Killed and started again, it continues the same search
    and ends with the same trials and choices. ExecutorError (after the search's report) where
    trials failed for reasons of their own."""
    registry = registry if registry is not None else Registry(plugins=study.plugins)
    check_study(study, registry, where)
    study = select_arms(study, arms) if arms else study
    searching = dataclasses.replace(study, name=f"{study.name}-search")
    folder = StudyFolder(out, searching)
    facts = checked_facts(searching, registry, where)
    spaces = {arm.name: space(study, arm, registry) for arm in study.arms}
    for arm in study.arms:
        check_space(searching, arm, spaces[arm.name], registry)
    store = open_storage(storage, folder)
    with folder.reporting():  # one tuner at a time draws the plan
        plans = {arm.name: plan_arm(store, searching, arm, spaces[arm.name], search_key(searching, arm, spaces[arm.name], facts), folder) for arm in study.arms}
    result = TuneResult(study, folder, {name: trials for name, (_, trials) in plans.items()}, spaces)
    todo = [(t.trained, searching.seeds[0], t.run) for trials in result.trials.values() for t in trials]
    executor = executor if executor is not None else LocalExecutor()
    if not retrain:  # another search's trials in these folders: its report stays as it was
        refuse_conflicts(searching, todo, facts)
    try:
        executor.run(searching, todo, registry=registry, facts=facts, progress=progress, retrain=retrain)
    finally:  # what finished is told and reported, whatever failed
        for ostudy, trials in plans.values():
            tell(ostudy, trials, searching, facts)
        result.chosen = {name: best(trials) for name, trials in result.trials.items()}
        result.actions = dict(Counter(t.run.action for trials in result.trials.values() for t in trials if t.run.action))
        write_search(result)
    return run_tuned(result, out, registry, executor, progress, retrain)


def run_tuned(result: TuneResult, out: str | Path, registry: Registry, executor, progress: bool, retrain: bool) -> TuneResult:
    """Train every arm's chosen configuration with the study's seeds as ``<study>-tuned``."""
    study = result.study
    arms = tuple(with_values(arm, result.chosen[arm.name].values) for arm in study.arms if result.chosen[arm.name])
    if not arms:
        raise TuneError(f"study {study.name!r}: no trial of any arm finished without diverging; nothing to report")
    tuned = dataclasses.replace(study, name=f"{study.name}-tuned", arms=arms)
    result.tuned = run_study(tuned, out, registry=registry, progress=progress, retrain=retrain, executor=executor, preface=preface(result))
    return result


# --------------------------------------------------------------------------- reports


OBJECTIVES = {"select_pxap": "PxAP", "select_maxboxaccv2": "MaxBoxAccV2"}


def objective_name(result: TuneResult) -> str:
    """What the finished trials were scored by ("PxAP", "MaxBoxAccV2"), for tables and figures."""
    return "/".join(sorted({OBJECTIVES[t.objective] for every in result.trials.values() for t in every if t.objective})) or "objective"


def _value(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(_value(x) for x in v) + ")"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _setting(values: dict[str, Any]) -> str:
    return ", ".join(f"{path}={_value(v)}" for path, v in values.items())


def selection(study: Study) -> str:
    """Which images choose the CAM threshold and the hyperparameters, in words."""
    d = study.data
    where = f"split {d.select_split!r}" if d.select_split else f"held out of {d.train_split!r}"
    if d.select_per_class:
        return f"{d.select_per_class} images per class, {where}"
    return f"{d.holdout} images {where}" if not d.select_split else f"{where}" + (f", at most {d.max_eval} images" if d.max_eval else "")


def _counts(trials: list[Trial]) -> str:
    done = sum(t.state == "COMPLETE" for t in trials)
    diverged = sum(t.state == "FAIL" for t in trials)
    return f"{done} of {len(trials)} trials finished" + (f", {diverged} diverged" if diverged else "") + (
        f", {len(trials) - done - diverged} not yet run" if len(trials) - done - diverged else "")  # fmt: skip


def _chosen_line(name: str, trials: list[Trial], chosen: Trial | None) -> str:
    if chosen is None:
        return f"- {name}: no trial finished ({_counts(trials)}): left out"
    objective = OBJECTIVES[chosen.objective]
    return f"- {name}: {_setting(chosen.values)} (trial {chosen.index}, selection {objective} {chosen.value:.1f}; {_counts(trials)})"


def preface(result: TuneResult) -> str:
    """The tuned table's opening: how it was tuned and what was chosen for each arm."""
    study, search = result.study, result.study.search
    proxy = f", with {_setting(dict(search.training))}" if search.training else ""
    objective = objective_name(result)
    lines = [_chosen_line(name, trials, result.chosen[name]) for name, trials in result.trials.items()]
    return (
        f"**Tuned, {search.trials} trials per arm**: random search (Optuna's random sampler, seed {search.seed}), each "
        f"trial trained once (seed {study.seeds[0]}{proxy}) and scored on the selection images ({selection(study)}); "
        f"each arm's best by selection {objective} trained again with every seed and scored on the test split below. "
        f"The trials: `{result.folder.path.name}/search.md`. Chosen:\n\n" + "\n".join(lines) + "\n\n"
    )


def write_search(result: TuneResult) -> None:
    """``trials.csv`` (one row per trial), ``search.md`` (each arm's space with its sources, its
    trials and its choice) and ``figures/trials.png`` in the search folder, under its report lock."""
    rows = [
        {"arm": t.arm, "trial": t.index, "optuna_number": t.number, "state": t.state, "objective": t.value, "diverged": t.diverged,
         **_columns(t.values)}
        for trials in result.trials.values() for t in trials
    ]  # fmt: skip
    columns = ["arm", "trial", "optuna_number", "state", "objective", "diverged"] + list(dict.fromkeys(k for r in rows for k in r if k not in _FIXED))
    with result.folder.reporting():
        write_csv(result.folder.path / "trials.csv", rows, columns)
        write_text(result.folder.path / "search.md", search_markdown(result))
        write_trials_figure(result.folder.figures / "trials.png", result.spaces, result.trials, result.chosen, objective_name(result))


_FIXED = ("arm", "trial", "optuna_number", "state", "objective", "diverged")


def _columns(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, v in values.items():
        out.update({f"{path}.high": v[0], f"{path}.low": v[1]} if isinstance(v, (tuple, list)) else {path: v})
    return out


def search_markdown(result: TuneResult) -> str:
    """The search in words: per arm its space (with each range's source), its trials and its choice."""
    study = result.study
    text = f"# {study.name}: hyperparameter search\n\n{study.search.trials} trials per arm, seed {study.search.seed}; selection images: {selection(study)}.\n"
    for name, trials in result.trials.items():
        text += f"\n## {name}\n\n| Path | Drawn | Range | Source |\n|---|---|---|---|\n"
        for p in result.spaces[name]:
            extent = ", ".join(map(_value, p.choices)) if p.kind == "choice" else f"[{_value(p.low)}, {_value(p.high)}]"
            text += f"| {p.path} | {p.kind} | {extent} | {p.source or '(not given)'} |\n"
        text += "\n" + _chosen_line(name, trials, result.chosen[name])[2:] + "\n"
    return text
