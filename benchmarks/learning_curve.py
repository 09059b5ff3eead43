"""Learning curves of training recipes: prompt accuracy against training time.

    python benchmarks/learning_curve.py --out benchmarks/results/curves/text \\
        --base configs/demo-baseline.toml --steps 1500 --eval-every 250 \\
        --recipe clip \\
        --recipe 'transformer:text_embedder.plugin="transformer"' \\
        --recipe 'small:core/modiff/configs/demo.toml:denoiser.channels=[32,64],train.lr=2e-3'

Each recipe is a settings file plus ``--set`` overrides; every recipe trains in
its own ``modiff train`` process (one thread each unless it says otherwise), as
many at a time as ``--cores`` allows. With ``[train] eval_every`` the core runs
the run's evaluator at fixed denoiser steps on the EMA weights and logs, in the
run's ``metrics.jsonl``, the accuracies with the training seconds so far
(every stage counted; evaluation and sampling paused out). The evaluation set
is the same for every recipe: the prompt-accuracy evaluator with a fixed seed
and number of prompts, sampled with a fixed cheap sampler and step count
(``--eval-*``, ``--sampler``; a recipe may override them, which makes the
sampler itself a lever).

Recipe syntax: ``NAME[:FILE.toml][:KEY=VALUE,KEY=VALUE,...]``; commas inside
``[...]`` or quotes do not split. ``--set NAME:KEY=VALUE`` adds one override to
recipe NAME, ``--common KEY=VALUE`` to every recipe (before its own). Two keys
are not settings but how the recipe runs: ``@threads=N`` (torch threads of its
process) and ``@nproc=N`` (``modiff train --nproc N``: N processes, gloo).
``--seeds 0,1`` trains every recipe once per run seed (``NAME.s0``,
``NAME.s1``: each its own autoencoder, pretext and denoiser) and adds each
recipe's mean over its seeds to the tables: the seed moves the demo's
accuracies as much as most levers do.

Because other jobs load the machine, wall seconds are noisy. Before training,
one process measures every recipe's cost per training step *interleaved*
(a few timed steps of each recipe in turn, several rounds, medians), as a ratio
to the reference recipe (``--reference``, default the first). The curves are
then drawn against three x-axes, each in its own PNG:

* ``seconds``: the run's own training wall seconds (noisy under load);
* ``equivalent``: reference-recipe-equivalent seconds, the recipe's measured
  relative cost of every stage (autoencoder, text embedder, denoiser steps)
  times the reference's denoiser step time (``--ref-step-seconds``, default the
  one measured in the timing process) — the load-free x-axis;
* ``steps``: denoiser steps.

When the recipes have trained, each one's final model is evaluated once more
on a larger set (``--final-prompts``, default 600 prompts of the same seed),
prompt by prompt, and ``curves.md`` ends with every recipe's accuracy over its
seeds and recipe − reference paired over the same prompts and seeds, with the
verdict ``modiff.stats`` computes ("a better", "b better", "not separable at
this budget"): the curve shows how a recipe learns, the verdict whether its end
point differs.

Outputs in ``--out``: ``curves.json`` (everything, including the plan),
``curves.md`` (tables), ``curves-<axis>.png`` (and with seeds
``curves-steps-mean.png``), ``final/`` (the final evaluations, per prompt) and
``final.png`` (recipe − reference with intervals and verdicts), ``logs/``, ``runs/`` (the run directories; not for
committing). Everything is written atomically after each
finished recipe, so partial results survive a failed or killed recipe;
re-running the same command (or just ``--out DIR``) resumes: finished recipes
are kept, interrupted ones continue with ``modiff train --resume``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_BASE = "core/modiff/configs/demo.toml"
ACCURACIES = (("one_object_accuracy", "one object"), ("two_object_accuracy", "two objects"),
              ("holdout_accuracy", "held-out pairs"))
AXES = {
    "seconds": "training wall seconds (this run, noisy under load)",
    "equivalent": "reference-equivalent seconds (relative step cost x reference step time)",
    "steps": "denoiser steps",
}
#: The same axes as short plot labels (a long one runs into the next panel); curves.md explains them.
AXIS_LABELS = {"seconds": "training seconds", "equivalent": "reference-equivalent seconds", "steps": "denoiser steps"}


class UsageError(Exception):
    """A mistake in the command line: printed, exit code 2."""


# ---------------------------------------------------------------------------- recipes


@dataclass
class Recipe:
    name: str
    file: str
    sets: list[str] = field(default_factory=list)
    threads: int = 1
    nproc: int = 1

    @property
    def cores(self) -> int:
        return self.threads * self.nproc


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets and quotes: ``a=[1,2],b="x,y"`` is two parts."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return [p for p in parts if p]


def parse_recipe(spec: str, base: str) -> Recipe:
    """``NAME[:FILE.toml][:KEY=VALUE,...]`` (see the module docstring)."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name or not all(ch.isalnum() or ch in "-_." for ch in name):
        raise UsageError(f"recipe {spec!r}: the name before ':' must be letters, digits, '-', '_' or '.'")
    file = base
    if rest:
        head, sep, tail = rest.partition(":")
        if head.endswith(".toml") and "=" not in head:
            file, rest = head, tail if sep else ""
    recipe = Recipe(name, file)
    for item in split_top_level(rest):
        add_setting(recipe, item)
    return recipe


def add_setting(recipe: Recipe, item: str) -> None:
    key, eq, value = item.partition("=")
    if not eq or not key.strip():
        raise UsageError(f"recipe {recipe.name}: {item!r} is not KEY=VALUE")
    key = key.strip()
    if key.startswith("@"):
        if key not in ("@threads", "@nproc"):
            raise UsageError(f"recipe {recipe.name}: unknown option {key!r}; use @threads=N or @nproc=N")
        try:
            n = int(value)
        except ValueError:
            raise UsageError(f"recipe {recipe.name}: {key} must be a whole number, got {value!r}") from None
        if n < 1:
            raise UsageError(f"recipe {recipe.name}: {key} must be at least 1, got {n}")
        setattr(recipe, key[1:], n)
    else:
        recipe.sets.append(f"{key}={value.strip()}")


#: A recipe trained at several run seeds is NAME.sSEED (``--seeds``).
SEED_SUFFIX = ".s"


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2]: distinct whole numbers, at least one."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: give whole numbers separated by commas, e.g. --seeds 0,1") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UsageError(f"--seeds {text!r}: give distinct seeds of 0 or more, e.g. --seeds 0,1")
    return seeds


def with_seeds(recipes: list[Recipe], seeds: list[int]) -> list[Recipe]:
    """Each recipe once per run seed (``NAME.sSEED``, ``run.seed`` set last):
    seed to seed a recipe moves as much as a lever does, so a lever is judged
    on more than one seed's curve."""
    return [
        Recipe(f"{r.name}{SEED_SUFFIX}{k}", r.file, [*r.sets, f"run.seed={k}"], r.threads, r.nproc)
        for r in recipes
        for k in seeds
    ]


def stem_and_seed(name: str) -> tuple[str, int]:
    """``("a", 1)`` for the seed run ``a.s1``; a recipe without seeds is its own stem at seed 0."""
    stem, sep, seed = name.rpartition(SEED_SUFFIX)
    return (stem, int(seed)) if sep and stem and seed.isdigit() else (name, 0)


def seed_groups(names: list[str]) -> dict[str, list[str]]:
    """Recipe names of the form NAME.sSEED, by NAME, where NAME has two seeds or more."""
    groups: dict[str, list[str]] = {}
    for n in names:
        stem, _ = stem_and_seed(n)
        if stem != n:
            groups.setdefault(stem, []).append(n)
    return {stem: members for stem, members in groups.items() if len(members) > 1}


def common_sets(args: argparse.Namespace) -> list[str]:
    """The evaluation set and budget every recipe shares (a recipe's own sets come after)."""
    sets = [
        f"train.eval_every={args.eval_every}",
        f"evaluator.num_prompts={args.eval_prompts}",
        f"evaluator.seed={args.eval_seed}",
        f"evaluator.steps={args.eval_steps}",
        "train.log_every=50",
    ]
    if args.sampler != "recipe":
        sets.append(f'scheduler.plugin="{args.sampler}"')
    if args.steps is not None:
        sets.append(f"train.steps={args.steps}")
    # A --common key given again replaces the flag's value in place, so the
    # plan and the report list each key once, with the value the runs use.
    merged: dict[str, str] = {}
    for assignment in sets + list(args.common):
        merged[assignment.partition("=")[0].strip()] = assignment
    return list(merged.values())


# ---------------------------------------------------------------------------- files


def atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


class Layout:
    def __init__(self, out: Path):
        self.out = out

    plan = property(lambda self: self.out / "plan.json")
    timing = property(lambda self: self.out / "timing.json")
    runs = property(lambda self: self.out / "runs")
    logs = property(lambda self: self.out / "logs")

    def status(self, name: str) -> Path:
        return self.out / "status" / f"{name}.json"

    def metrics(self, name: str) -> Path:
        return self.runs / name / "metrics.jsonl"

    def final(self, name: str) -> Path:
        return self.out / "final" / f"{name}.json"


def merge_plan(layout: Layout, recipes: list[Recipe], common: list[str], reference: str | None) -> dict[str, Any]:
    """The plan on disk, extended by this command's recipes; a recipe may not
    silently change under the same name (its run would mix two recipes)."""
    old = read_json(layout.plan, None)
    plan = old or {"recipes": {}, "common": common, "reference": None}
    if old and recipes and old.get("common") != common:
        raise UsageError(
            f"{layout.plan} was made with other shared settings ({old.get('common')}); use another --out, "
            "or repeat the original options"
        )
    for r in recipes:
        mine = asdict(r)
        if r.name in plan["recipes"] and plan["recipes"][r.name] != mine:
            raise UsageError(
                f"recipe {r.name!r} in {layout.plan} differs from the one given now ({plan['recipes'][r.name]} "
                f"against {mine}); give the changed recipe a new name"
            )
        plan["recipes"][r.name] = mine
    if not plan["recipes"]:
        raise UsageError("no recipe: give at least one --recipe (or --out a directory with a plan.json)")
    plan["reference"] = reference or plan.get("reference") or next(iter(plan["recipes"]))
    if plan["reference"] not in plan["recipes"]:
        raise UsageError(f"--reference {plan['reference']!r} is not one of the recipes {list(plan['recipes'])}")
    atomic_write(layout.plan, json.dumps(plan, indent=1))
    return plan


# ---------------------------------------------------------------------------- interleaved step cost


def _batch(dataset: Any, start: int, n: int) -> Any:
    import torch

    from modiff.protocols import Batch

    examples = [dataset[(start + i) % len(dataset)] for i in range(n)]
    return Batch(torch.stack([e.image for e in examples]), [e.caption for e in examples], None)


def _step_functions(recipe: Recipe, common: list[str]) -> dict[str, Any]:
    """Closures that run one training step of each stage of ``recipe`` as the
    core's loop does (AdamW, clipping, EMA; latents cached, a frozen text
    embedder's output cached, a joint one run every step)."""
    import torch

    import modiff
    from modiff.protocols import Fittable, Trainable, trains_jointly
    from modiff.training.optim import adamw

    resolved = modiff.load_settings_files([ROOT / recipe.file], [*common, *recipe.sets, 'run.device="cpu"'])
    torch.manual_seed(0)
    c = modiff.build(resolved, device="cpu")
    train, ds = resolved.train, c.dataset
    out: dict[str, Any] = {"fixed_seconds": 0.0}

    def optimiser_step(params: list[Any], loss: Any, opt: Any, clip: float) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()

    enc = c.encoder
    if isinstance(enc, Trainable) and enc.needs_training and train.encoder.steps:
        ep = [p for p in enc.parameters() if p.requires_grad]
        eo = adamw(ep, lr=1e-4, weight_decay=0.01)
        eb = _batch(ds, 0, train.encoder.batch_size)
        out["encoder"] = (lambda: optimiser_step(ep, enc.training_loss(eb), eo, train.encoder.grad_clip),
                          train.encoder.steps)
    txt = c.text_embedder
    if txt is not None and isinstance(txt, Fittable) and txt.needs_training:
        t0 = time.perf_counter()
        txt.fit(ds.captions())
        out["fixed_seconds"] += time.perf_counter() - t0
    elif txt is not None and isinstance(txt, Trainable) and txt.needs_training and train.text_embedder.steps:
        tp = [p for p in txt.parameters() if p.requires_grad]
        to = adamw(tp, lr=1e-4, weight_decay=0.01)
        tb = _batch(ds, 0, train.text_embedder.batch_size)
        out["text_embedder"] = (lambda: optimiser_step(tp, txt.training_loss(tb), to, train.text_embedder.grad_clip),
                                train.text_embedder.steps)
        txt.needs_training = False

    joint = trains_jointly(txt)
    modules = [m for m in (c.denoiser, c.conditioner, txt if joint else None) if isinstance(m, torch.nn.Module)]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = adamw(params, lr=1e-4, weight_decay=0.01)
    ema = [p.detach().clone() for p in params] if train.ema_decay > 0 else []
    b = train.batch_size // recipe.nproc  # each rank's share
    db = _batch(ds, 0, b)
    with torch.no_grad():  # the frozen parts run once: the core caches their outputs
        x0 = enc.encode(db.images)
        frozen_text = None if (txt is None or joint) else txt.embed(db.captions)
    g = torch.Generator().manual_seed(0)
    sched = c.scheduler

    def denoiser_step() -> None:
        # the core draws the batch per step (the dataset renders on the fly); latents are cached
        _batch(ds, 0, b)
        text = txt.embed(db.captions) if joint else frozen_text
        cond = c.conditioner.condition(text, batch_size=b) if c.conditioner is not None else modiff.Conditioning()
        t = sched.sample_timesteps(b, generator=g)
        noise = torch.randn(x0.shape, generator=g)
        x_t = sched.add_noise(x0, noise, t)
        pred = c.denoiser(x_t, t.float(), cond)
        per = (pred.float() - sched.training_target(x0, noise, t).float()).pow(2).flatten(1).mean(1)
        optimiser_step(params, (sched.loss_weight(t).to(per) * per).mean(), opt, train.grad_clip)
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.lerp_(p.detach(), 1 - train.ema_decay)

    out["denoiser"] = (denoiser_step, train.steps)
    out["denoiser_params"] = sum(p.numel() for p in c.denoiser.parameters())
    return out


def measure_costs(plan: dict[str, Any], rounds: int, per_round: int, layout: Layout) -> dict[str, Any]:
    """Seconds per step of every stage of every recipe, interleaved in this process."""
    import torch

    recipes = [Recipe(**r) for r in plan["recipes"].values()]
    fns: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for r in recipes:
        torch.set_num_threads(r.threads)
        try:
            fns[r.name] = _step_functions(r, plan["common"])
        except Exception as exc:  # noqa: BLE001 - a recipe that does not build is reported, the others measured
            errors[r.name] = f"{type(exc).__name__}: {exc}"
    times: dict[str, dict[str, list[float]]] = {n: {} for n in fns}
    threads = {r.name: r.threads for r in recipes}
    for n, f in fns.items():  # warm-up: first calls allocate and pick kernels
        torch.set_num_threads(threads[n])
        for stage in ("encoder", "text_embedder", "denoiser"):
            if stage in f:
                f[stage][0]()
                f[stage][0]()
    for _ in range(rounds):
        for n, f in fns.items():
            torch.set_num_threads(threads[n])
            for stage in ("encoder", "text_embedder", "denoiser"):
                if stage not in f:
                    continue
                t0 = time.perf_counter()
                for _ in range(per_round):
                    f[stage][0]()
                times[n].setdefault(stage, []).append((time.perf_counter() - t0) / per_round)
    torch.set_num_threads(1)
    result: dict[str, Any] = {"rounds": rounds, "steps_per_round": per_round, "recipes": {}, "errors": errors}
    for n, f in fns.items():
        result["recipes"][n] = {
            "seconds_per_step": {s: statistics.median(v) for s, v in times[n].items()},
            "steps": {s: f[s][1] for s in times[n]},
            "fixed_seconds": f["fixed_seconds"],
            "denoiser_params": f["denoiser_params"],
        }
    atomic_write(layout.timing, json.dumps(result, indent=1))
    return result


def relative_costs(timing: dict[str, Any], reference: str, unit: float | None, nproc: dict[str, int]) -> dict[str, Any]:
    """Per recipe: denoiser step cost relative to the reference's, and the cost
    of its stages before the denoiser, in reference denoiser steps."""
    recs = timing.get("recipes", {})
    if reference not in recs:
        return {}
    ref = recs[reference]["seconds_per_step"]["denoiser"]
    unit = unit or ref
    out = {"reference": reference, "unit_seconds": unit, "measured_reference_seconds": ref, "recipes": {}}
    for n, r in recs.items():
        sps, steps = r["seconds_per_step"], r["steps"]
        fixed = sum(sps[s] * steps[s] for s in ("encoder", "text_embedder") if s in sps) + r["fixed_seconds"]
        out["recipes"][n] = {
            "denoiser_relative": sps["denoiser"] / ref,
            "fixed_reference_steps": fixed / ref,
            "denoiser_params": r["denoiser_params"],
            "approx": nproc.get(n, 1) > 1,  # ranks in parallel, communication not counted
        }
    return out


# ---------------------------------------------------------------------------- training


def train_command(recipe: Recipe, common: list[str], layout: Layout, resume: bool,
                  stage_cache: Path | None = None) -> list[str]:
    # Ctrl-C (SIGINT) must reach the trainer, which saves a checkpoint on it; a process started in the
    # background by a shell inherits SIGINT ignored, so the handler is put back first.
    boot = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "import torch; torch.set_num_threads(int(sys.argv.pop(1))); "
        "from modiff.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    cmd = [sys.executable, "-c", boot, str(recipe.threads), "train", str(ROOT / recipe.file)]
    for s in [*common, *recipe.sets, f'run.name="{recipe.name}"', f'run.runs_dir="{layout.runs}"']:
        cmd += ["--set", s]
    if recipe.nproc > 1:
        cmd += ["--nproc", str(recipe.nproc)]
    if resume:
        cmd.append("--resume")
    if stage_cache is not None:
        cmd += ["--stage-cache", str(stage_cache)]
    return cmd + ["--quiet"]


@dataclass
class Job:
    recipe: Recipe
    proc: subprocess.Popen[bytes]
    started: float
    log: Any


# ---------------------------------------------------------------------------- sharing stages
#
# Recipes that differ only after a stage (the denoiser, the optimiser...)
# would train that stage bit for bit alike (the core's determinism). Every
# recipe trains with `modiff train --stage-cache DIR` (the core's
# modiff.stage_cache.StageCache): the first one keeps each stage it finishes,
# the others start after it with its seconds counted. All this benchmark adds
# is the order: a recipe that would share a stage a running recipe is still
# training waits for it.


def stage_key_set(recipe: Recipe, common: list[str]) -> set[str]:
    """The keys of the stages ``recipe`` could share (:func:`modiff.stage_cache.stage_keys`)."""
    from modiff.settings import load
    from modiff.stage_cache import stage_keys

    return set(stage_keys(load([ROOT / recipe.file], [*common, *recipe.sets]), recipe.nproc).values())


# ---------------------------------------------------------------------------- scheduling


def run_recipes(plan: dict[str, Any], layout: Layout, cores: int, on_finish: Any, only: list[str] | None,
                share: bool = True, stage_cache: Path | None = None) -> None:
    from modiff.stage_cache import StageCache

    recipes = [Recipe(**r) for r in plan["recipes"].values()]
    todo = [r for r in recipes if (read_json(layout.status(r.name), {}) or {}).get("status") != "done"]
    if only:
        todo = [r for r in todo if r.name in only]
    for r in todo:
        if r.cores > cores:
            raise UsageError(f"recipe {r.name} needs {r.cores} cores (@threads x @nproc) but --cores is {cores}")
    cache = StageCache(stage_cache or layout.out / "stages") if share else None
    keys = {r.name: stage_key_set(r, plan["common"]) for r in todo} if cache else {}
    running: list[Job] = []
    layout.logs.mkdir(parents=True, exist_ok=True)

    def stop_all(*_: Any) -> None:
        for j in running:
            j.proc.send_signal(signal.SIGINT)  # the trainer checkpoints on Ctrl-C
        for j in running:
            try:
                j.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                j.proc.kill()
        raise KeyboardInterrupt

    def waits(r: Recipe) -> bool:
        """A running recipe is training a stage ``r`` could start after."""
        if cache is None or (layout.runs / r.name / "settings.toml").exists():
            return False
        return cache.must_wait(keys[r.name], (keys[j.recipe.name] for j in running))

    previous = signal.signal(signal.SIGTERM, stop_all)
    try:
        while todo or running:
            free = cores - sum(j.recipe.cores for j in running)
            for r in list(todo):
                if r.cores > free or waits(r):
                    continue
                todo.remove(r)
                resume = (layout.runs / r.name / "settings.toml").exists()
                shared = cache is not None and not resume and any(cache.has(k) for k in keys[r.name])
                cmd = train_command(r, plan["common"], layout, resume, cache.folder if cache else None)
                log = open(layout.logs / f"{r.name}.log", "ab")  # noqa: SIM115 - open while the job runs
                log.write(f"\n$ {shlex.join(cmd)}\n".encode())
                log.flush()
                env = {**os.environ, "OMP_NUM_THREADS": str(r.threads), "MKL_NUM_THREADS": str(r.threads)}
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
                running.append(Job(r, proc, time.time(), log))
                free -= r.cores
                note = " (stages from another recipe)" if shared else " (resuming)" if resume else ""
                print(f"[{time.strftime('%H:%M:%S')}] started {r.name}{note}", flush=True)
            time.sleep(2)
            for j in list(running):
                pid, wait_status, ru = os.wait4(j.proc.pid, os.WNOHANG)
                if pid == 0:
                    continue
                rc = j.proc.returncode = os.waitstatus_to_exitcode(wait_status)
                running.remove(j)
                j.log.close()
                old = read_json(layout.status(j.recipe.name), {}) or {}
                wall = float(old.get("wall_seconds", 0.0)) + time.time() - j.started
                status = {"status": "done" if rc == 0 else "failed", "returncode": rc, "wall_seconds": wall,
                          "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                          "cpu_user_seconds": float(old.get("cpu_user_seconds", 0.0)) + ru.ru_utime,
                          "cpu_sys_seconds": float(old.get("cpu_sys_seconds", 0.0)) + ru.ru_stime}
                atomic_write(layout.status(j.recipe.name), json.dumps(status, indent=1))
                print(f"[{time.strftime('%H:%M:%S')}] {j.recipe.name} {status['status']} (exit {rc}, "
                      f"{wall:.0f} s wall); log: {layout.logs / (j.recipe.name + '.log')}", flush=True)
                on_finish()
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------- results


def eval_points(layout: Layout, name: str) -> list[dict[str, Any]]:
    """The run's evaluation records, one per denoiser step (the last wins after a resume)."""
    path = layout.metrics(name)
    by_step: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("kind") == "eval" and rec.get("stage") == "denoiser":
                by_step[int(rec["step"])] = rec
    return [by_step[k] for k in sorted(by_step)]


def collect(plan: dict[str, Any], layout: Layout, unit: float | None) -> dict[str, Any]:
    timing = read_json(layout.timing, {}) or {}
    nproc = {n: r.get("nproc", 1) for n, r in plan["recipes"].items()}
    costs = relative_costs(timing, plan["reference"], unit, nproc)
    out: dict[str, Any] = {"plan": plan, "axes": AXES, "timing": timing, "costs": costs, "recipes": {}}
    for name in plan["recipes"]:
        cost = costs.get("recipes", {}).get(name)
        points = []
        for rec in eval_points(layout, name):
            p = {"step": rec["step"], "train_seconds": rec.get("train_seconds"), **rec.get("eval", {})}
            if cost:
                p["equivalent_seconds"] = (cost["fixed_reference_steps"] + rec["step"] * cost["denoiser_relative"]) * \
                    costs["unit_seconds"]
            points.append(p)
        out["recipes"][name] = {"status": read_json(layout.status(name), {"status": "not finished"}), "points": points,
                                "cost": cost}
    out["final"] = final_comparisons(plan, layout)
    return out


# ---------------------------------------------------------------------------- final models, with verdicts


def evaluate_final(plan: dict[str, Any], layout: Layout, prompts: int, threads: int) -> list[str]:
    """Each finished recipe's final (EMA) model on ``prompts`` prompts of the evaluation's own seed.

    The curve's evaluations are small so that they are cheap at every
    checkpoint; at 75 one-object prompts an accuracy near 0.85 is known to about
    ±0.08, as much as most levers move it. The end point is read once more on a
    set several times larger, with per-prompt results, so that recipes can be
    compared prompt by prompt (every recipe scores the same prompts and noise).
    Kept in ``final/NAME.json``; a recipe already there is not evaluated again.
    """
    import torch

    from modiff.pipeline import Pipeline

    torch.set_num_threads(threads)
    done = []
    for name in plan["recipes"]:
        path = layout.final(name)
        if path.is_file() or read_json(layout.status(name), {}).get("status") != "done":
            continue
        pipeline = Pipeline.load(layout.runs / name, device="cpu", with_data=True)  # the evaluator's held-out pairs
        evaluator = pipeline.components.evaluator
        if evaluator is None or not hasattr(evaluator, "settings"):
            continue
        evaluator.settings = evaluator.settings.model_copy(update={"num_prompts": prompts})
        result = evaluator.evaluate(pipeline)
        keep = {k: v for k, v in result.items() if not isinstance(v, (list, dict)) or k == "per_item"}
        atomic_write(path, json.dumps({"prompts": prompts, **keep}))
        done.append(name)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: final model on {prompts} prompts: "
              + ", ".join(f"{label} {_f(result.get(key), 3)}" for key, label in ACCURACIES), flush=True)
    return done


def final_comparisons(plan: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """Each recipe's final accuracies over its seeds (95 % bootstrap over prompts
    and seeds) and, for every recipe but the reference, recipe − reference
    paired over the same prompts and seeds, with the verdict ``modiff.stats``
    computes. Recipes without a final evaluation are left out."""
    from modiff import stats

    finals = {n: read_json(layout.final(n)) for n in plan["recipes"] if layout.final(n).is_file()}
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    for name, result in finals.items():
        stem, seed = stem_and_seed(name)
        groups.setdefault(stem, {})[seed] = result
    reference = stem_and_seed(plan["reference"])[0]

    def items(stem: str, key: str, seeds: list[int]) -> list[Any]:
        out = []
        for seed in seeds:
            per_item = groups[stem][seed].get("per_item") or {}
            values = (per_item.get("metrics") or {}).get(key)
            if values is not None:
                out.append(stats.seed_items(seed, per_item["ids"], values))
        return out

    out: dict[str, Any] = {"reference": reference, "recipes": {}}
    for stem, by_seed in groups.items():
        seeds = sorted(by_seed)
        row: dict[str, Any] = {"seeds": seeds, "prompts": by_seed[seeds[0]].get("prompts"), "accuracy": {},
                               "against_reference": {}}
        shared = sorted(set(seeds) & set(groups.get(reference, {})))
        for key, _ in ACCURACIES:
            interval = stats.bootstrap(items(stem, key, seeds))
            row["accuracy"][key] = None if interval is None else interval.as_dict()
            if stem != reference and shared:
                row["against_reference"][key] = stats.compare(items(stem, key, shared),
                                                              items(reference, key, shared)).as_dict()
        row["paired_seeds"] = shared if stem != reference else []
        out["recipes"][stem] = row
    return out


def final_markdown(final: dict[str, Any]) -> list[str]:
    if not final.get("recipes"):
        return []
    ref = final["reference"]
    first = next(iter(final["recipes"].values()))
    lines = ["", f"Final models, {first['prompts']} prompts each (the evaluation's seed; every recipe scores the same "
             "prompts and noise): each recipe's accuracy over its seeds, and recipe − "
             f"`{ref}` paired over the same prompts and seeds, with the verdict `modiff.stats` computes (95 % "
             "bootstrap over prompts and seeds):", "",
             "| recipe | seeds | " + " | ".join(label for _, label in ACCURACIES) + " | "
             + " | ".join(f"{label}: − {ref}" for _, label in ACCURACIES) + " |",
             "|---|---|" + "---|" * (2 * len(ACCURACIES))]
    from modiff.report import fmt_difference, fmt_estimate

    for stem, row in final["recipes"].items():
        cells = [fmt_estimate(row["accuracy"].get(key), key) for key, _ in ACCURACIES]
        for key, _ in ACCURACIES:
            c = row["against_reference"].get(key)
            cells.append(f"{c['verdict']}: {fmt_difference({**c, 'metric': key})}" if c else "")
        lines.append(f"| {stem} | {', '.join(map(str, row['seeds']))} | " + " | ".join(cells) + " |")
    return lines


def _f(v: Any, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


#: The number of prompts behind each accuracy, as the prompt-accuracy evaluator reports it.
COUNTS = {"one_object_accuracy": "num_one_object", "two_object_accuracy": "num_two_object",
          "holdout_accuracy": "num_holdout"}


def _with_interval(point: dict[str, Any], key: str) -> str:
    from modiff.stats import wilson

    value, n = point.get(key), point.get(COUNTS[key])
    if value is None or not n:
        return _f(value)
    i = wilson(round(value * n), int(n))
    return f"{value:.2f} [{i.low:.2f}, {i.high:.2f}]" if i else _f(value)


def markdown(result: dict[str, Any]) -> str:
    plan, costs = result["plan"], result["costs"]
    lines = ["# Learning curves", ""]
    lines.append("Shared settings: `" + "`, `".join(plan["common"]) + "`")
    lines.append("")
    if costs:
        lines.append(
            f"Reference recipe `{costs['reference']}`: denoiser step "
            f"{costs['measured_reference_seconds'] * 1000:.0f} ms "
            f"measured in the timing process; equivalent seconds use {costs['unit_seconds'] * 1000:.0f} ms per "
            "reference step."
        )
        lines.append("")
    lines += [
        "| recipe | settings | step cost (× ref) | stages before denoiser (ref steps) | denoiser params | status |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in result["recipes"].items():
        rec = plan["recipes"][name]
        how = " ".join([rec["file"], *rec["sets"]] + ([f"@threads={rec['threads']}"] if rec["threads"] > 1 else [])
                       + ([f"@nproc={rec['nproc']}"] if rec["nproc"] > 1 else []))
        c = r["cost"] or {}
        st = r["status"]
        status = st.get("status", "?")
        if "wall_seconds" in st:
            status += (
                f", {st['wall_seconds']:.0f} s wall, "
                f"{st.get('cpu_user_seconds', 0) + st.get('cpu_sys_seconds', 0):.0f} s CPU"
            )
        lines.append(f"| {name} | `{how}` | {_f(c.get('denoiser_relative'))}{'*' if c.get('approx') else ''} | "
                     f"{_f(c.get('fixed_reference_steps'), 0)} | {c.get('denoiser_params', '–')} | {status} |")
    lines += ["", "Accuracy at each evaluation (one object / two objects / held-out pairs):", "",
              "| recipe | step | train s | equivalent s | one | two | held-out | all |",
              "|---|---|---|---|---|---|---|---|"]
    for name, r in result["recipes"].items():
        for p in r["points"]:
            lines.append(f"| {name} | {p['step']} | {_f(p.get('train_seconds'), 0)} | "
                         f"{_f(p.get('equivalent_seconds'), 0)} | "
                         f"{_f(p.get('one_object_accuracy'))} | {_f(p.get('two_object_accuracy'))} | "
                         f"{_f(p.get('holdout_accuracy'))} | {_f(p.get('accuracy'))} |")
    lines += ["", "Each recipe's last evaluation, with 95 % Wilson intervals from the number of prompts "
              "(`modiff.stats.wilson`): intervals apart from each other are a difference this evaluation sees; "
              "overlapping ones may be noise):",
              "", "| recipe | step | one object | two objects | held-out pairs |", "|---|---|---|---|---|"]
    for name, r in result["recipes"].items():
        if r["points"]:
            last = r["points"][-1]
            cells = " | ".join(_with_interval(last, key) for key, _ in ACCURACIES)
            lines.append(f"| {name} | {last['step']} | {cells} |")
    groups = seed_groups([n for n, r in result["recipes"].items() if r["points"]])
    if groups:
        lines += ["", "Each recipe's mean over its seeds at their last evaluation (every seed's value in parentheses; "
                  "a difference between recipes smaller than the spread of their seeds is not one the curve "
                  "decides):", "", "| recipe | seeds | step | one object | two objects | held-out pairs |",
                  "|---|---|---|---|---|---|"]
        for stem, members in groups.items():
            lasts = [result["recipes"][m]["points"][-1] for m in members]
            cells = []
            for key, _ in ACCURACIES:
                values = [p.get(key) for p in lasts]
                known = [v for v in values if isinstance(v, (int, float))]
                cells.append(f"{statistics.fmean(known):.2f} ({', '.join(_f(v) for v in values)})" if known else "–")
            steps = sorted({p["step"] for p in lasts})
            lines.append(f"| {stem} | {len(members)} | {'/'.join(map(str, steps))} | {' | '.join(cells)} |")
    lines += final_markdown(result.get("final") or {})
    if any((r["cost"] or {}).get("approx") for r in result["recipes"].values()):
        lines += ["", "\\* several processes: the cost of one rank's share, communication not counted."]
    lines += ["", "Axes: " + "; ".join(f"`{k}`: {v}" for k, v in AXES.items()), ""]
    return "\n".join(lines)


def mean_over_seeds(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each seeded recipe's curve averaged over its seeds, at the steps every seed evaluated."""
    groups = seed_groups([n for n, r in result["recipes"].items() if r["points"]])
    means = {}
    for stem, members in groups.items():
        by_step = [{p["step"]: p for p in result["recipes"][m]["points"]} for m in members]
        steps = sorted(set.intersection(*(set(b) for b in by_step)))
        means[stem] = [{"step": step, **{acc: statistics.fmean(float(b[step][acc]) for b in by_step)
                                         for acc, _ in ACCURACIES if all(b[step].get(acc) is not None
                                                                         for b in by_step)}}
                       for step in steps]
    return means


def final_chart(final: dict[str, Any], out: Path, title: str) -> Path | None:
    """``final.png``: every recipe − reference on the final models, with its interval and verdict."""
    from _plot import Difference, interval_chart

    panels = []
    for key, label in ACCURACIES:
        rows = []
        for stem, row in (final.get("recipes") or {}).items():
            c = (row.get("against_reference") or {}).get(key)
            if c and c.get("difference"):
                d = c["difference"]
                rows.append(Difference(stem, d["value"], d["low"], d["high"], c["verdict"]))
        panels.append((label, rows))
    if not any(rows for _, rows in panels):
        return None
    ref = final["reference"]
    return interval_chart(panels, out / "final.png", x_label=f"recipe - {ref}",  # the plot font has no U+2212
                          title=f"{title}: final models against {ref}",
                          key=f"95 % intervals; green: the recipe better, red: {ref} better, grey: not separable")


def plots(result: dict[str, Any], out: Path, title: str) -> list[Path]:
    """``curves-<axis>.png`` with every run, and with seeds ``curves-steps-mean.png``:
    one line per recipe, its mean over seeds (easier to read than a line per seed)."""
    from _plot import Panel, Series, line_chart

    keys = {"seconds": "train_seconds", "equivalent": "equivalent_seconds", "steps": "step"}
    curves = {name: r["points"] for name, r in result["recipes"].items()}
    charts = [(f"curves-{axis}.png", key, axis, curves) for axis, key in keys.items()]
    means = mean_over_seeds(result)
    if means:
        charts.append(("curves-steps-mean.png", "step", "steps", means))
    paths = [p for p in [final_chart(result.get("final") or {}, out, title)] if p is not None]
    for filename, key, axis, series in charts:
        panels = []
        for acc, label in ACCURACIES:
            panel = Panel(label)
            for name, points in series.items():
                pts = [(float(p[key]), float(p[acc])) for p in points if p.get(key) is not None
                       and p.get(acc) is not None]
                if pts:
                    panel.series.append(Series(name, pts))
            panels.append(panel)
        if not any(p.series for p in panels):
            continue
        paths.append(line_chart(panels, out / filename, x_label=AXIS_LABELS[axis], y_label="accuracy",
                                title=title + (" (mean over seeds)" if series is means else "")))
    return paths


def write_results(plan: dict[str, Any], layout: Layout, unit: float | None, title: str) -> dict[str, Any]:
    result = collect(plan, layout, unit)
    atomic_write(layout.out / "curves.json", json.dumps(result, indent=1))
    atomic_write(layout.out / "curves.md", markdown(result))
    plots(result, layout.out, title)
    return result


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder (re-run with it to resume)")
    p.add_argument("--recipe", action="append", default=[], metavar="NAME[:FILE][:K=V,...]")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME:KEY=VALUE",
                   help="one more override for recipe NAME")
    p.add_argument("--common", action="append", default=[], metavar="KEY=VALUE", help="an override for every recipe")
    p.add_argument("--seeds", default=None, metavar="S,S,...",
                   help="train every recipe once per run seed, as NAME.sSEED with run.seed=SEED; the tables add "
                   "each recipe's mean over its seeds (default: each recipe once, at its file's seed)")
    p.add_argument("--base", default=DEFAULT_BASE,
                   help=f"settings file of recipes that name none (default {DEFAULT_BASE})")
    p.add_argument("--steps", type=int, default=None, help="denoiser steps of every recipe (default: each file's)")
    p.add_argument("--eval-every", type=int, default=250, help="denoiser steps between evaluations (default 250)")
    p.add_argument("--eval-prompts", type=int, default=150, help="prompts per evaluation (default 150)")
    p.add_argument("--eval-seed", type=int, default=1, help="seed of the evaluation prompts and noise (default 1)")
    p.add_argument("--eval-steps", type=int, default=10, help="sampler steps per evaluation image (default 10)")
    p.add_argument("--sampler", default="unipc",
                   help="sampler of every recipe ([scheduler] plugin; same noise schedule), "
                        'or "recipe" to keep each one\'s')
    p.add_argument("--reference", default=None, help="recipe the step costs are relative to (default: the first)")
    p.add_argument("--ref-step-seconds", type=float, default=None,
                   help="seconds of one reference denoiser step for the equivalent axis (default: measured)")
    p.add_argument("--cores", type=int, default=2, help="cores to fill with recipes (default 2)")
    p.add_argument("--timing-rounds", type=int, default=5)
    p.add_argument("--timing-steps", type=int, default=3, help="timed steps per recipe per round")
    p.add_argument("--no-timing", action="store_true", help="skip the step-cost measurement")
    p.add_argument("--retime", action="store_true", help="measure the step costs again")
    p.add_argument("--only", action="append", default=None, help="train only these recipes now")
    p.add_argument("--no-share", action="store_true",
                   help="every recipe trains its own stages (default: a recipe whose settings decide a stage before "
                   "the denoiser's exactly as another's starts after that one's)")
    p.add_argument("--final-prompts", type=int, default=600, metavar="N",
                   help="evaluate each finished recipe's final model once more on N prompts and compare the recipes "
                        "on them, prompt by prompt (default 600; 0: off)")
    p.add_argument("--report-only", action="store_true",
                   help="write the tables and plots from what is there (and the final evaluations still missing)")
    p.add_argument("--timing-only", action="store_true", help="measure the step costs, train nothing")
    p.add_argument("--stage-cache", type=Path, default=None, metavar="DIR",
                   help="where finished stages are kept for recipes that can share them (default OUT/stages; give "
                   "sweeps the same folder to share between them)")
    p.add_argument("--title", default="", help="plot title (default: the output folder's name)")
    p.add_argument("--_timing", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    layout = Layout(args.out)
    try:
        if args._timing:
            plan = read_json(layout.plan)
            measure_costs(plan, args.timing_rounds, args.timing_steps, layout)
            return 0
        recipes: dict[str, Recipe] = {}
        for spec in args.recipe:
            r = parse_recipe(spec, args.base)
            if r.name in recipes:
                raise UsageError(f"recipe {r.name!r} is given twice")
            recipes[r.name] = r
        for s in args.sets:
            name, _, item = s.partition(":")
            if name not in recipes:
                raise UsageError(f"--set {s!r}: no recipe named {name!r} (recipes: {', '.join(recipes) or 'none'})")
            add_setting(recipes[name], item)
        if args.seeds is not None:
            seeds = parse_seeds(args.seeds)
            if args.reference in recipes:
                args.reference = f"{args.reference}{SEED_SUFFIX}{seeds[0]}"
            recipes = {r.name: r for r in with_seeds(list(recipes.values()), seeds)}
        for r in recipes.values():
            if not (ROOT / r.file).is_file():
                raise UsageError(
                    f"recipe {r.name}: settings file {r.file} does not exist (paths are relative to {ROOT})"
                )
        plan = merge_plan(layout, list(recipes.values()), common_sets(args) if recipes else [], args.reference)
        if not recipes and read_json(layout.plan) is None:
            raise UsageError("no recipe given")
        title = args.title or args.out.name
        if args.final_prompts < 0:
            raise UsageError(f"--final-prompts {args.final_prompts}: give a number of prompts, or 0 for none")
        if args.report_only:
            if args.final_prompts:
                evaluate_final(plan, layout, args.final_prompts, args.cores)
            write_results(plan, layout, args.ref_step_seconds, title)
            print(layout.out / "curves.md")
            return 0
        timing = read_json(layout.timing, {}) or {}
        missing = [n for n in plan["recipes"] if n not in timing.get("recipes", {})]
        if not args.no_timing and (missing or args.retime):
            print(f"[{time.strftime('%H:%M:%S')}] measuring step costs, interleaved ({len(plan['recipes'])} recipes)",
                  flush=True)
            rc = subprocess.call(
                [sys.executable, __file__, "--out", str(args.out), "--_timing", "--timing-rounds",
                 str(args.timing_rounds), "--timing-steps", str(args.timing_steps)],
                env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
            )
            if rc != 0:
                print(f"step-cost measurement failed (exit {rc}); the curves are drawn without the equivalent axis")
        write_results(plan, layout, args.ref_step_seconds, title)
        if args.timing_only:
            costs = (read_json(layout.out / "curves.json", {}) or {}).get("costs", {})
            for name, c in costs.get("recipes", {}).items():
                print(f"{name:<24} step cost {c['denoiser_relative']:.2f} x {costs['reference']}, stages before the "
                      f"denoiser {c['fixed_reference_steps']:.0f} reference steps, {c['denoiser_params']} parameters")
            return 0
        run_recipes(plan, layout, args.cores, lambda: write_results(plan, layout, args.ref_step_seconds, title),
                    args.only, share=not args.no_share, stage_cache=args.stage_cache)
        if args.final_prompts:
            evaluate_final(plan, layout, args.final_prompts, args.cores)
        result = write_results(plan, layout, args.ref_step_seconds, title)
        print(markdown(result))
        return 0
    except UsageError as exc:
        print(f"learning_curve: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
