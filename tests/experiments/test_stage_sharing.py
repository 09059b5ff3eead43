"""Stages shared between runs (modiff.stage_cache) and runs side by side
(``modiff ablate --jobs``), on the real plugins at tiny sizes: a run that
starts from another run's stages ends bit for bit where it would have ended
alone, and only runs whose settings decide a stage alike share it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modiff.ablation import read_ablation, run_ablation
from modiff.checkpoint import Checkpoint
from modiff.cli import main
from modiff.runs import RunDir
from modiff.settings import load
from modiff.stage_cache import StageCache, stage_keys

pytestmark = pytest.mark.slow

# The tiny run of tests/tiny-run.toml with the text transformer and its layout pretext, so that
# both stages before the denoiser's are shareable: 4 steps each, a checkpoint every 2.
TINY = (Path(__file__).resolve().parents[1] / "tiny-run.toml").read_text().format(
    runs="{runs}", steps=4, stage_steps=4, checkpoint_every=2
) + """
[text_embedder]
plugin = "transformer"
width = 16
heads = 2
depth = 1
pretext = "layout"
pretext_grid = 4
"""

ROLES = ("encoder", "text_embedder", "conditioner", "denoiser")


def write(tmp: Path, name: str, body: str, *, share: bool = True) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "base.toml").write_text(TINY.format(runs=(tmp / "runs").as_posix()))
    path = tmp / f"{name}.toml"
    path.write_text(f'base = "base.toml"\nname = "{name}"\nshare_stages = {str(share).lower()}\n'
                    f'images_per_prompt = 1\n{body}')
    return path


def weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {role: load_file(str(RunDir(run).weights(role))) for role in ROLES if RunDir(run).weights(role).is_file()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), what
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{what}: {differ[:3]}"


TWO_CONDITIONERS = """
[[variant]]
name = "xattn"

[[variant]]
name = "hybrid"
set = { "conditioner.plugin" = "hybrid" }
"""


def test_a_run_started_from_anothers_stages_ends_as_it_would_alone(tmp_path: Path) -> None:
    shared = write(tmp_path / "s", "shared", TWO_CONDITIONERS)
    records = run_ablation(read_ablation(shared), progress=False, log=lambda *_: None)
    assert [r["status"] for r in records] == ["done", "done"], records
    first, second = records
    assert "shared_stages" not in first and second["shared_stages"] == ["encoder", "text_embedder"]
    runs = tmp_path / "s" / "runs" / "shared"
    a, b = weights(runs / "xattn"), weights(runs / "hybrid")
    assert_same(a["encoder"], b["encoder"], "the shared autoencoder")
    copied = [json.loads(line) for line in (runs / "hybrid" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in copied if r.get("stage") == "encoder"], "the shared stages' log lines come with them"

    # run again after its record was lost (as a driver killed mid-run leaves it): the resumed run still
    # says it started from the kept stages, though the cache did not start it this time
    (runs / "hybrid" / "cell.json").unlink()
    (again,) = [r for r in run_ablation(read_ablation(shared), progress=False, log=lambda *_: None)
                if r["name"] == "hybrid"]
    assert again["shared_stages"] == ["encoder", "text_embedder"]

    alone = write(tmp_path / "a", "alone", '[[variant]]\nname = "hybrid"\nset = { "conditioner.plugin" = "hybrid" }\n',
                  share=False)
    (record,) = run_ablation(read_ablation(alone), progress=False, log=lambda *_: None)
    assert "shared_stages" not in record
    reference = weights(tmp_path / "a" / "runs" / "alone" / "hybrid")
    for role in ROLES:
        assert_same(reference[role], b[role], f"{role} of the run that started from the shared stages")
    # the shared stages' seconds are counted in the run that reused them (honest cost curves): its
    # seconds are those of the checkpoint it started from plus its own denoiser's. (Against the run
    # trained alone, a timing ratio, this failed once under CI load: 0.67 s against 2.30 s.)
    from modiff.stage_cache import STARTED_FROM

    source = Path(json.loads((runs / "hybrid" / STARTED_FROM).read_text())["from"])
    shared_seconds = json.loads((source / "state.json").read_text())["train_seconds"]
    assert 0 < shared_seconds < second["train_seconds"], (shared_seconds, second["train_seconds"])


def test_stage_keys_change_with_what_decides_the_stage_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "base.toml").write_text(TINY.format(runs=tmp_path.as_posix()))

    def keys(*sets: str) -> dict[str, str]:
        return stage_keys(load([tmp_path / "base.toml"], list(sets)))

    base = keys()
    assert keys('conditioner.plugin="concat"', "train.steps=9", 'run.name="other"', "train.lr=1e-3") == base
    for change in ("run.seed=1", "data.size=32", "encoder.channels=[8,8,16]", "train.encoder.steps=5"):
        changed = keys(change)
        assert changed["encoder"] != base["encoder"] and changed["text_embedder"] != base["text_embedder"], change
    for change in ("text_embedder.width=32", "train.text_embedder.lr=1e-2"):
        changed = keys(change)
        assert changed["encoder"] == base["encoder"] and changed["text_embedder"] != base["text_embedder"], change
    # two processes sum a batch's gradient in another order than one: their stages are kept apart
    resolved = load([tmp_path / "base.toml"], [])
    assert stage_keys(resolved, processes=1) == base
    two = stage_keys(resolved, processes=2)
    assert all(two[stage] != base[stage] for stage in base), two


def test_jobs_train_runs_side_by_side_and_a_sharing_run_waits_for_its_stages(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "jobs", "seeds = [0, 1]\n" + TWO_CONDITIONERS)
    assert main(["ablate", str(path), "--quiet", "--jobs", "2"]) == 0
    out = tmp_path / "runs" / "jobs"
    records = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/cell.json")}
    assert sorted(records) == ["hybrid,seed=0", "hybrid,seed=1", "xattn,seed=0", "xattn,seed=1"]
    assert all(r["status"] == "done" for r in records.values())
    # each seed trains its stages once: the hybrid run of a seed starts from the xattn run's
    for seed in (0, 1):
        assert records[f"hybrid,seed={seed}"].get("shared_stages") == ["encoder", "text_embedder"]
        assert "shared_stages" not in records[f"xattn,seed={seed}"]
    entries = [p for p in (out / ".stages").iterdir() if not p.name.startswith(".")]  # (.writers: the lock)
    assert len(entries) == 4  # two stages x two seeds
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    # side by side: the two seeds' first runs were in flight at the same time (their spans overlap);
    # a timing ratio would be flaky on a loaded machine, where tiny runs are mostly process start-up
    first, second = records["xattn,seed=0"], records["xattn,seed=1"]
    assert max(first["started_at"], second["started_at"]) < min(first["ended_at"], second["ended_at"]), \
        "two at a time: the runs of the two seeds overlap"
    assert "of wall time from the first run's start to the last one's end" in (out / "report.md").read_text()
    log = capsys.readouterr().out
    assert log.index("xattn,seed=1") < log.index("hybrid,seed=0"), "the sharing run waited; the other seed did not"


def test_jobs_must_be_a_positive_whole_number(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "bad", TWO_CONDITIONERS)
    assert main(["ablate", str(path), "--jobs", "0"]) == 2
    err = capsys.readouterr().err
    assert "argument --jobs: must be a whole number of at least 1, got '0'" in err and "Traceback" not in err


def test_train_with_a_stage_cache_starts_a_new_run_after_the_stages_another_kept(tmp_path: Path, capsys) -> None:
    base = tmp_path / "base.toml"
    base.write_text(TINY.format(runs=(tmp_path / "runs").as_posix()))
    cache = tmp_path / "stages"
    assert main(["train", str(base), "--set", 'run.name="first"', "--quiet", "--stage-cache", str(cache)]) == 0
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2  # autoencoder, text embedder
    capsys.readouterr()
    def concat(name: str) -> list[str]:
        return ["train", str(base), "--set", f'run.name="{name}"', "--set", 'conditioner.plugin="concat"', "--quiet"]

    assert main([*concat("second"), "--stage-cache", str(cache)]) == 0
    assert "starting after the text_embedder stage" in capsys.readouterr().out
    assert main(concat("alone")) == 0  # the same settings, no cache
    started, alone = weights(tmp_path / "runs" / "second"), weights(tmp_path / "runs" / "alone")
    for role in ROLES:
        assert_same(alone[role], started[role], f"{role} of the run started from the cache")
    # a run with a stage decided otherwise trains its own: nothing to start from
    capsys.readouterr()
    assert main(["train", str(base), "--set", 'run.name="third"', "--set", "run.seed=1", "--quiet",
                 "--stage-cache", str(cache)]) == 0
    assert "starting after" not in capsys.readouterr().out
    # nor does a run of the same settings trained by two processes (its stages would differ in the last bits)
    resolved = load([base], ['run.name="fourth"'])
    assert StageCache(cache).start(RunDir(tmp_path / "runs" / "fourth"), resolved, processes=2) is None
    assert StageCache(cache).start(RunDir(tmp_path / "runs" / "fourth"), resolved, processes=1) == "text_embedder"


def test_a_run_waits_only_for_a_stage_a_running_run_could_still_keep(tmp_path: Path) -> None:
    from modiff.stage_cache import StageCache

    cache = StageCache(tmp_path)
    assert cache.must_wait({"a", "b"}, [{"b", "c"}])  # the running run trains stage b: wait
    assert not cache.must_wait({"a"}, [{"b", "c"}])  # nothing in common: start
    assert not cache.must_wait({"a"}, [])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "state.json").write_text("{}")
    assert not cache.must_wait({"a", "b"}, [{"b", "c"}])  # b is kept already: start after it


def test_stage_keys_hold_what_computes_a_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads, torch's version, a plugin's version and the device change a stage's
    bits, so each gives other keys (and the same process, the same keys)."""
    import dataclasses

    from modiff import stage_cache

    (tmp_path / "base.toml").write_text(TINY.format(runs=tmp_path.as_posix()))
    resolved = load([tmp_path / "base.toml"], [])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        base = stage_keys(resolved)
        torch.set_num_threads(2)
        two = stage_keys(resolved)
    finally:
        torch.set_num_threads(threads)
    assert all(two[stage] != base[stage] for stage in base), "two threads end a few bits away from one"
    assert stage_keys(resolved, threads=1) == base and stage_keys(resolved, threads=2) == two  # a driver's, for jobs

    encoder = resolved.components["encoder"]
    newer = dataclasses.replace(encoder, registration=dataclasses.replace(encoder.registration, version="99.0"))
    bumped = stage_keys(dataclasses.replace(resolved, components={**resolved.components, "encoder": newer}), threads=1)
    assert bumped["encoder"] != base["encoder"] and bumped["text_embedder"] != base["text_embedder"]

    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert stage_keys(resolved, threads=1)["encoder"] != base["encoder"]
    monkeypatch.undo()
    monkeypatch.setattr(stage_cache, "_cpu_model", lambda: "another CPU")
    assert stage_keys(resolved, threads=1)["encoder"] != base["encoder"]


def fake_checkpoint(folder: Path) -> Checkpoint:
    """A checkpoint at the end of the encoder's stage, with a real weights file."""
    from modiff.files import atomic_save_tensors

    state = {"stages_done": ["encoder"], "stage": None, "step": 0, "components": ["encoder"], "train_seconds": 1.0}
    (folder / "components").mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps(state))
    atomic_save_tensors(folder / "components" / "encoder.safetensors", {"w": torch.ones(64, 64)})
    return Checkpoint(folder, state)


def test_a_killed_copys_leftover_is_removed_by_the_next_writer_and_a_live_one_is_not(tmp_path: Path) -> None:
    import fcntl
    import os

    (tmp_path / "base.toml").write_text(TINY.format(runs=tmp_path.as_posix()))
    resolved = load([tmp_path / "base.toml"], [])
    cache = StageCache(tmp_path / "cache")
    leftover = tmp_path / "cache" / ".0123456789abcdef0123.4242.tmp"
    (leftover / "components").mkdir(parents=True)
    (leftover / "components" / "encoder.safetensors").write_bytes(b"a whole checkpoint, half copied")
    source = fake_checkpoint(tmp_path / "ckpt")

    fd = os.open(tmp_path / "cache" / ".writers", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a writer is copying now: its folder is no leftover
    assert cache.keep(RunDir(tmp_path / "a"), "encoder", source, resolved, processes=2)
    assert leftover.is_dir()
    os.close(fd)
    assert cache.keep(RunDir(tmp_path / "a"), "encoder", source, resolved)  # no writer copying: tidied
    assert not leftover.exists()
    assert not list((tmp_path / "cache").glob(".*.tmp"))


def test_a_damaged_cache_entry_is_an_error_naming_the_entry(tmp_path: Path) -> None:
    from modiff.errors import RunError

    (tmp_path / "base.toml").write_text(TINY.format(runs=tmp_path.as_posix()))
    resolved = load([tmp_path / "base.toml"], [])
    cache = StageCache(tmp_path / "cache")
    assert cache.keep(RunDir(tmp_path / "a"), "encoder", fake_checkpoint(tmp_path / "ckpt"), resolved)
    entry = cache.entry(stage_keys(resolved)["encoder"])
    weights = entry / "components" / "encoder.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-64:] = bytes(64)  # 64 bytes of the tensor data zeroed
    weights.write_bytes(bytes(raw))
    with pytest.raises(RunError, match=f"the stage cache entry {entry} is damaged: .*encoder.safetensors"):
        cache.start(RunDir(tmp_path / "runs" / "b"), resolved)
    assert not (tmp_path / "runs" / "b").exists()
