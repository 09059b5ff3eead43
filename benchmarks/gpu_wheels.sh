#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.py installs on the lent GPU machine, which reaches no network.
#
#   . .venv/bin/activate && bash benchmarks/gpu_wheels.sh [FOLDER]     # default FOLDER: .gpu-wheels (git-ignored)
#
# That machine's python3 is CPython 3.12 (x86-64, glibc >= 2.28) with torch 2.11 (CUDA), transformers,
# tokenizers, huggingface-hub, safetensors, pluggy, numpy, scipy, pillow, tqdm, wrapt, hypothesis and pytest
# (see /work/.library/device/KINDS.md). It lacks pydantic (and pydantic-core, pydantic-settings, python-dotenv,
# typing-inspection, annotated-types; pydantic 2.14 also needs typing-extensions >= 4.16, newer than the
# image may hold), gensim (and smart-open; scipy is there) and diffusers (its other needs are there;
# importlib-metadata only matters before Python 3.8). Those are downloaded for that Python here, exact
# versions (the ones this project was tested with), and modiff's own distributions are built as wheels
# from this checkout. SOURCES.json records what they were built from: gpu_check.py refuses stale wheels.
#
# Everything that travels to the machine (the working tree and this folder) must stay under 64 MiB;
# the script prints the sizes and fails if the sum is over.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-.gpu-wheels}"
PY="${PYTHON:-python}"
LIMIT_MIB=64

rm -rf "$OUT"
mkdir -p "$OUT"

# The machine's Python, as pip's platform tags name it (manylinux: glibc 2.17 to 2.28 wheels all run there).
TARGET=(--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
MISSING=(
  pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4
  typing-inspection==0.4.5 annotated-types==0.8.0 typing-extensions==4.16.0
  gensim==4.4.0 smart-open==9.0.2
  diffusers==0.42.1
)
echo "downloading ${#MISSING[@]} wheels for CPython 3.12 / manylinux x86-64 into $OUT"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: "${TARGET[@]}" -d "$OUT" "${MISSING[@]}"

echo "building modiff's distributions (pure Python) into $OUT"
for dist in . plugins/* contrib/*; do
  [ -f "$dist/pyproject.toml" ] || continue
  "$PY" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$OUT" "$dist"
done
rm -rf build plugins/*/build contrib/*/build  # what the setuptools builds leave behind

"$PY" - "$OUT" "$LIMIT_MIB" <<'EOF'
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from gpu_check import MANIFEST, source_digest

out, limit = Path(sys.argv[1]), float(sys.argv[2])
wheels = sorted(out.glob("*.whl"))
names = [w.name.split("-")[0].lower().replace("_", "-") for w in wheels]
twice = {n for n in names if names.count(n) > 1}
if twice:
    sys.exit(f"two versions of {', '.join(sorted(twice))} in {out}: pip --target would refuse the install")
(out / MANIFEST).write_text(json.dumps({
    "sources": source_digest(),
    "wheels": {w.name: w.stat().st_size for w in wheels},
}, indent=1))
mib = 1024 * 1024
carried = sum(w.stat().st_size for w in wheels) / mib
files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True, check=True).stdout.split(b"\0")
tree = sum(Path(f.decode()).stat().st_size for f in files if f and Path(f.decode()).is_file()) / mib
print(f"{len(wheels)} wheels, {carried:.1f} MiB; working tree {tree:.1f} MiB; together {carried + tree:.1f} MiB "
      f"of the {limit:.0f} MiB that may travel")
if carried + tree > limit:
    sys.exit("too much to carry: drop gensim (the word2vec rows of the tier are then skipped, saying why)")
EOF
