#!/usr/bin/env bash
# setup.sh - installs every Debian package scalekv needs to build, test and run its scripts.
# Idempotent: packages already present are left alone; safe to run on every CI start.
#   scripts/setup.sh            build + test dependencies
#   scripts/setup.sh --torch    also Debian's PyTorch (checkpoint converters, demo training, references) and
#                               .venv-hf/: a venv over it with transformers 4.36 + sentencepiece (the T5 golden)
set -euo pipefail

with_torch=0
for a in "$@"; do
  case "$a" in
    --torch) with_torch=1 ;;
    *) echo "setup.sh: unknown option $a (use --torch)" >&2; exit 2 ;;
  esac
done

pkgs=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-dev libopenblas0-pthread     # attention's GEMMs on the CPU (and the BLAS Debian's PyTorch calls)
  libdnnl-dev ocl-icd-opencl-dev           # oneDNN: CPU linear layers and convolutions, F32 and BF16 (its CMake config needs OpenCL)
  libopenmpi-dev openmpi-bin               # MPI communicator, mpirun
  slurm-wlm munge procps                   # the one-node Slurm test (scripts/slurm/local_cluster_test.sh)
  nlohmann-json3-dev libcli11-dev libfmt-dev   # configs and JSON, the CLI, formatting
  libgtest-dev libgmock-dev libpng-dev zlib1g-dev
  libsentencepiece-dev                     # the Flan-T5 tokenizer loads spiece.model (runtime/models/t5_tokenizer.cpp)
  libboost-dev prometheus-cpp-dev          # scalekv serve: Boost.Beast/Asio HTTP, Prometheus metrics (server/)
  curl hey chromium                        # the server's tests: a real HTTP client, load generator and browser
  clang libclang-rt-14-dev                 # libFuzzer + sanitizers for the safetensors fuzzer
  python3 python3-numpy
)
if [ "$with_torch" = 1 ]; then
  pkgs+=(python3-torch dataset-fashion-mnist python3-pil python3-venv python3-pip
        python3-matplotlib)                  # benchmark plots (scripts/bench/serve_table.py)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# PyTorch must call OpenBLAS, not the reference BLAS (ten times slower): select it explicitly.
if [ -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 ] && command -v update-alternatives >/dev/null; then
  ${SUDO:-} update-alternatives --set libblas.so.3-x86_64-linux-gnu \
    /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 >/dev/null 2>&1 || true
fi
# transformers' T5TokenizerFast + T5EncoderModel, the reference of the C++ T5 encoder (scripts/make_t5_golden.py,
# ctest t5_golden_make): a venv that sees Debian's PyTorch, in the checkout (.venv-hf/, git-ignored).
if [ "$with_torch" = 1 ]; then
  venv="$(cd "$(dirname "$0")/.." && pwd)/.venv-hf"
  if ! "$venv/bin/python" -c "import transformers, sentencepiece, google.protobuf" >/dev/null 2>&1; then
    echo "setup.sh: making $venv (transformers 4.36, sentencepiece, protobuf)"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install -q "transformers==4.36.*" sentencepiece "protobuf<5"
  fi
fi
echo "setup.sh: dependencies ready"
