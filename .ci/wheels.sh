#!/usr/bin/env bash
# CI: modiff as users get it. Builds every distribution (the core, plugins/*,
# contrib/*) as a wheel, not editable; checks that each wheel ships every file
# of its package that git tracks (package data an editable install would hide);
# installs the wheels into a fresh virtual environment from that wheelhouse
# (`pip install --no-index --find-links`, the built-in plugins through the
# `modiff[all]` extra); and runs `modiff plugins` and a tiny `modiff demo` and
# `modiff generate` there, out of a folder that holds no source.
#
#   .ci/wheels.sh [PYTHON]    PYTHON builds the wheels (default .venv/bin/python:
#                             it needs setuptools>=70.1 and pip)
#
# About two minutes on 2 cores, most of it building and installing wheels.
# Third-party wheels are fetched into the wheelhouse with pip's configured index
# and find-links first (`pip download`), so the install itself runs with
# --no-index; torch comes from wherever `pip install torch==2.13.0` finds it (a
# local file on the CI machines).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${1:-.venv/bin/python}
torch_requirement=${MODIFF_CI_TORCH:-torch==2.13.0}
start=$(date +%s)
say() { echo "wheels: [$(($(date +%s) - start)) s] $*"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/modiff-wheels.XXXXXX")
trap 'rm -rf "$work"; say "cleaned up"' EXIT
house="$work/wheelhouse"
mkdir -p "$house"

# 1. Wheels of every distribution, built as pip builds them for users (offline:
#    no build isolation, setuptools from the building environment), from a copy
#    of the files a checkout has (tracked, or untracked and not ignored): no
#    build/, egg-info or stray file of this working tree can leak in.
src="$work/src"
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard -- pyproject.toml README.md core plugins contrib \
  | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$src"
dists=("$src" "$src"/plugins/*/ "$src"/contrib/*/)
say "building ${#dists[@]} wheels"
"$python" -m pip wheel -q --no-deps --no-build-isolation --wheel-dir "$house" "${dists[@]}" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }

# 2. Every file of a distribution's packages must be in its wheel.
"$python" - "$house" "${dists[@]}" <<'PY'
import sys, tomllib, zipfile
from pathlib import Path

house, dists = Path(sys.argv[1]), sys.argv[2:]
problems = []
for d in map(Path, dists):
    project = tomllib.loads((d / "pyproject.toml").read_text())
    name = project["project"]["name"].replace("-", "_")
    [wheel] = house.glob(f"{name}-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    where = d / project.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {}).get("where", ["."])[0]
    for package in (p for p in where.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
        for path in package.rglob("*"):
            inside = path.relative_to(where)
            if path.is_dir() or "tests" in inside.parts or "__pycache__" in inside.parts or ".egg-info" in str(inside):
                continue
            if inside.as_posix() not in shipped:
                problems.append(f"{wheel.name} lacks {inside.as_posix()}: declare it as package data")
if problems:
    sys.exit("wheels: missing package data:\n  " + "\n  ".join(problems))
print(f"wheels: every file of every package is in its wheel ({len(dists)} wheels)")
PY

# 3. The third-party requirements of what step 4 installs (modiff, the built-in plugins of its
#    `all` extra, and the contrib distributions named here), as wheels in the wheelhouse (torch
#    apart). The optional plugins (trackers, launchers, distill) are built and checked above but
#    not installed, so their requirements (Ray, MLflow, TensorBoard and theirs) are not fetched.
installed=(modiff-dit modiff-digits)
"$python" - "$house" "${installed[@]}" >"$work/requirements.txt" <<'PY'
import re, sys, zipfile
from email.parser import Parser
from pathlib import Path


def name_of(requirement):
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


metas = {}
for wheel in Path(sys.argv[1]).glob("*.whl"):
    with zipfile.ZipFile(wheel) as z:
        meta = Parser().parsestr(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode())
    metas[meta["Name"].lower().replace("_", "-")] = meta.get_all("Requires-Dist") or []
core = metas["modiff"]
installed = {"modiff", *sys.argv[2:], *(name_of(r) for r in core if 'extra == "all"' in r)}
missing = installed - set(metas)
if missing:
    sys.exit(f"wheels: no wheel was built for {sorted(missing)}")
wanted = {r for n in installed for r in metas[n] if "extra ==" not in r}
for requirement in sorted(wanted):
    name = name_of(requirement)
    if name not in metas and name != "torch":
        print(requirement)
PY
say "fetching third-party wheels: $(tr '\n' ' ' <"$work/requirements.txt")"
"$python" -m pip download -q --only-binary=:all: --dest "$house" -r "$work/requirements.txt" >"$work/download.log" 2>&1 \
  || { cat "$work/download.log"; exit 1; }

# 4. A fresh environment: torch, then everything else from the wheelhouse alone.
say "installing into a fresh environment"
python3.11 -m venv "$work/venv"
venv="$work/venv/bin"
"$venv/pip" install -q --no-compile "$torch_requirement" >"$work/torch.log" 2>&1 || { cat "$work/torch.log"; exit 1; }
say "torch installed; installing the wheelhouse"
"$venv/pip" install -q --no-compile --no-index --find-links "$house" "modiff[all]" "${installed[@]}" >"$work/install.log" 2>&1 \
  || { cat "$work/install.log"; exit 1; }
"$venv/pip" check
say "installed"

# 5. Used from outside the checkout: plugins found, a tiny demo trained, sampled, evaluated.
cd "$work"
export OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1
unset MODIFF_LOAD_PLUGINS PYTHONPATH
"$venv/python" - <<'PY'
import modiff, pathlib, sys
here = pathlib.Path(modiff.__file__).resolve()
if "site-packages" not in here.parts:
    sys.exit(f"wheels: modiff was imported from {here}, not from the installed wheel")
PY
"$venv/modiff" plugins --json >plugins.json
"$venv/modiff" plugins
"$venv/python" - <<'PY'
import json
listing = json.load(open("plugins.json"))
found = {d["distribution"] for d in listing["distributions"]}
wanted = {f"modiff-{n}" for n in "autoencoders clip conditioners datasets schedulers sd unet word2vec dit digits".split()}
assert not listing["broken"], f"broken plugins: {listing['broken']}"
assert wanted <= found, f"not found through their entry points: {sorted(wanted - found)}"
PY
say "tiny demo"
tiny=(
  --set data.size=64 --set encoder.channels=[8,8,8] --set encoder.norm_num_groups=4
  --set text_embedder.width=16 --set text_embedder.heads=2 --set text_embedder.depth=1
  --set text_embedder.pretext_grid=4
  --set denoiser.channels=[16,32] --set denoiser.norm_num_groups=8
  --set train.steps=2 --set train.batch_size=4 --set train.warmup_steps=1 --set train.checkpoint_every=2
  --set train.encoder.steps=2 --set train.encoder.batch_size=4
  --set train.text_embedder.steps=2 --set train.text_embedder.batch_size=4
  --set sample.steps=2 '--set=sample.prompts=["a red circle"]'
  --set evaluator.num_prompts=2 --set evaluator.steps=2 --set run.device=cpu
)
"$venv/modiff" demo --out demo --quiet "${tiny[@]}" >demo.log 2>&1 || { cat demo.log; exit 1; }
grep -q "prompt accuracy" demo.log && test -s demo/samples.png \
  || { cat demo.log; echo "wheels: the demo printed no prompt accuracy or wrote no demo/samples.png" >&2; exit 1; }
say "generate from the demo's run"
"$venv/modiff" generate demo "a blue square at the top" --steps 2 --n 1 --scheduler euler --out generated.png
test -s generated.png || { echo "wheels: generate wrote no generated.png" >&2; exit 1; }
cd "$root"
say "passed"
