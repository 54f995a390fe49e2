#!/bin/bash
# Cloud TPU VM slice (one or many hosts): the same `python -m aisci.main` on
# every worker, joined into one JAX program with --distributed=on (JAX reads
# the slice's hosts from the TPU VM metadata).
#
#   TPU=my-v4-32 ZONE=us-central2-b experiments/launch/tpu_vm.sh setup
#   TPU=my-v4-32 ZONE=us-central2-b WORKDIR=/mnt/shared/runs/vit \
#     experiments/launch/tpu_vm.sh train --config=configs/vit_cifar.py --config.dtype=bfloat16
#   TPU=my-v4-32 ZONE=us-central2-b experiments/launch/tpu_vm.sh stop    # SIGTERM: save, exit 75
#
# `setup` copies this repository to ~/aisci on every worker and installs it
# with the TPU extra. WORKDIR (and an imagefolder data set) must be on a
# filesystem that every worker mounts at the same path (e.g. a Filestore NFS
# share): all processes write the checkpoints, process 0 the logs. A tfds
# data set can instead be read from a bucket: --config.data_dir=gs://BUCKET/tfds.
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE to its zone}"
ssh_all() {
  gcloud compute tpus tpu-vm ssh "${TPU}" --zone="${ZONE}" --worker=all --command="$1"
}
case "${1:-}" in
  setup)
    gcloud compute tpus tpu-vm scp --recurse --zone="${ZONE}" --worker=all \
        "$(dirname "$0")/../.." "${TPU}":~/aisci
    ssh_all "cd ~/aisci && python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e '.[tpu]'"
    ;;
  train)
    shift
    : "${WORKDIR:?set WORKDIR to a folder on a filesystem all workers share}"
    # nohup: the run outlives the ssh session; each worker logs to its own file.
    ssh_all "cd ~/aisci && nohup .venv/bin/python -m aisci.main --distributed=on --workdir=${WORKDIR} $* > ~/aisci-train.log 2>&1 &"
    echo "Started on all workers; logs: ~/aisci-train.log on each (process 0's has the progress lines)."
    ;;
  stop)
    ssh_all "pkill -TERM -f '^.venv/bin/python -m aisci.main' || true"
    ;;
  *)
    echo "usage: TPU=NAME ZONE=ZONE $0 setup | train ARGS... | stop" >&2
    exit 2
    ;;
esac
