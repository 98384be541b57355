#!/usr/bin/env bash
# Builds .gpu/, what benchmarks/gpu_checks.py needs on a GPU machine that has no network: Python 3.12 wheels
# of the packages its image lacks or has at other versions than pyproject.toml pins (bitsandbytes trimmed to
# its CUDA 13.0 library, to fit the 64 MiB a call carries), airbench's source, and the config and tokenizer
# files (no weights) of the packaged MiniLM-L6 and SmolLM2-135M, from which the checks build random-weight
# models of the same shapes. Run from the repository root after `make install`; .gpu/ stays out of git.
#
#   bash tools/gpu_carry.sh
#   # then, on the GPU machine, with .gpu carried:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
#   PYTHONPATH=/tmp/site:$PWD/.gpu/pure python3 benchmarks/gpu_checks.py --shapes .gpu --out "$OUT"
set -euo pipefail
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/.gpu/" >> .git/info/exclude; }
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/pure .gpu/minilm-shape .gpu/smollm2-shape
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$p")
done
for pin in pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 \
           transformers==5.23.0 peft==0.21.2 bitsandbytes==0.50.2; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .gpu/wheels "$pin"
done
zip -q -d .gpu/wheels/bitsandbytes-*.whl 'bitsandbytes/libbitsandbytes_cuda1[12]*.so' \
  'bitsandbytes/libbitsandbytes_cuda132.so' 'bitsandbytes/libbitsandbytes_rocm*' 'bitsandbytes/libbitsandbytes_xpu*'
python3 -m pip download -q --no-deps -d /tmp/airbench-sdist airbench==0.1.8
tar xzf /tmp/airbench-sdist/airbench-0.1.8.tar.gz -C /tmp/airbench-sdist
cp -r /tmp/airbench-sdist/airbench-0.1.8/airbench .gpu/pure/
.venv/bin/python - <<'PY'
import shutil
from pathlib import Path

from tunelab.assets.models import resolve_model

for alias, target, names in (
    ("minilm", ".gpu/minilm-shape", ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                                     "special_tokens_map.json"]),
    ("smollm2-135m", ".gpu/smollm2-shape", ["config.json", "generation_config.json", "tokenizer.json",
                                            "tokenizer_config.json", "chat_template.jinja"]),
):
    folder = resolve_model(alias).path
    for name in names:
        shutil.copy(Path(folder) / name, Path(target) / name)
PY
du -sh .gpu
