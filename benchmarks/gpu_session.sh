#!/usr/bin/env bash
# The GPU benchmarks in one go, as a session lent a GPU runs them
# (benchmarks/README.md, "On a GPU"): the chip's bf16 matrix-product rate,
# ViT-B/16 bf16 train steps aisci vs PyTorch (benchmarks/gpu.py) and the fast
# CNN's time to 94 % on CIFAR-10 beside the PyTorch airbench94 recipe on the
# same JPEG copy (benchmarks/torch_cifar.py; gpu_cifar.py alone: part cifar),
# then the product itself: `python -m aisci.main --config=configs/cifar_fast.py:gpu`
# (batches made on the GPU, no TensorFlow needed), and last the wider
# airbench95-style net (configs/cifar_fast.py:gpu95) on the same copy.
#
#   bash benchmarks/gpu_session.sh CARRY OUT
#   PARTS=main bash benchmarks/gpu_session.sh CARRY OUT   # any of vit,cifar,torch,main,cifar95
#
# CARRY holds cifar10-jpeg.tar.gz (../shared/data) and the wheels the
# machine lacks (the lent H200's image had jax, flax, optax, torch, no
# TensorFlow: ml_collections, tokenizers, matplotlib and its dependencies,
# tensorboard, protobuf; benchmarks/README.md, "On a GPU"); OUT gets the logs
# and the aisci.main run's reports (not its checkpoints).
set -u
carry=${1:-.gpu_carry}
out=${2:-${OUT:-/tmp/aisci_gpu}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
if compgen -G "$carry/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target /tmp/aisci_site "$carry"/*.whl || exit 1
  export PYTHONPATH=/tmp/aisci_site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
data=/tmp/aisci_data
mkdir -p "$data"
tar -xzf "$carry/cifar10-jpeg.tar.gz" -C "$data" &
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
  --format=csv 2>&1 | tee "$out/machine.txt"
python3 -c 'import jax, flax, optax, torch; print("jax", jax.__version__,
  "flax", flax.__version__, "optax", optax.__version__, "torch",
  torch.__version__, jax.devices())' 2>&1 | tee -a "$out/machine.txt"
parts=,${PARTS:-vit,torch,main,cifar95},
if [[ $parts == *,vit,* ]]; then
  # VIT_ARGS: e.g. "--profile_dir=$OUT/profile --xla_variants=';--xla_...'"
  python3 -m benchmarks.gpu --batch_sizes="${VIT_BATCHES:-256}" ${VIT_ARGS:-} 2>&1 \
    | tee "$out/vit_b16.txt"
fi
wait
if [[ $parts == *,cifar,* ]]; then
  python3 -m benchmarks.gpu_cifar --data="$data/cifar10-jpeg" \
    --epochs="${CIFAR_EPOCHS:-10,14,20}" --seeds="${CIFAR_SEEDS:-0}" 2>&1 \
    | tee "$out/cifar.txt"
fi
if [[ $parts == *,torch,* ]]; then
  # airbench94 in PyTorch (float16, batch 1024) and aisci's gpu config, both
  # on the JPEG copy: how much of the gap to 94 % is the data. TORCH_ARGS:
  # e.g. "--limit=1024 --widths=8,16,16" for a quick check on a CPU.
  python3 -m benchmarks.torch_cifar --data="$data/cifar10-jpeg" \
    --torch_epochs="${TORCH_EPOCHS:-9.9,20}" --epochs="${CIFAR_EPOCHS:-10,20}" \
    --seeds="${CIFAR_SEEDS:-0}" ${TORCH_ARGS:-} 2>&1 | tee "$out/torch_cifar.txt"
fi
if [[ $parts == *,main,* ]]; then
  # profile: a trace of steps 11-13 comes back in aisci_main/profile.
  python3 -m aisci.main --config=configs/cifar_fast.py:gpu \
    --config.dataset="imagefolder:$data/cifar10-jpeg" \
    --config.profile.num_steps=3 \
    --workdir="$out/aisci_main" ${MAIN_FLAGS:-} 2>&1 | tee "$out/aisci_main.txt"
  rm -rf "$out/aisci_main/checkpoints"
fi
if [[ $parts == *,cifar95,* ]]; then
  # airbench95's widths, epochs and learning rate: how close a wider net
  # comes to 94 % on the JPEG copy. CIFAR95_ARGS: e.g. "--limit=1024".
  python3 -m benchmarks.gpu_cifar --data="$data/cifar10-jpeg" \
    --config=configs/cifar_fast.py:gpu95 --epochs="${CIFAR95_EPOCHS:-15}" \
    --seeds="${CIFAR_SEEDS:-0}" ${CIFAR95_ARGS:-} 2>&1 | tee "$out/cifar95.txt"
fi
