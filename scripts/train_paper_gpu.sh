#!/usr/bin/env bash
# Paper-size SADM training on the GPUs of one node (issue #15 item 4): Stage I cDDPM (recon_paper,
# the authors' schedule: 14 400 steps of 32 slices per GPU), Stage II SegUnet (seg_paper, 7 200 steps), calibration,
# evaluation; every stage through the engine's own commands, DDP over all GPUs with torchrun.
#
# Inputs are datasets already brought into model space by `anomalyseg prepare-dataset` (case folders
# + splits.json), e.g.
#   anomalyseg prepare-dataset ixi     /data/IXI     -o data/ixi
#   anomalyseg prepare-dataset brats21 /data/BraTS21 -o data/brats21
#
# Usage:
#   HEALTHY=data/ixi LABELLED=data/brats21 scripts/train_paper_gpu.sh [RUN_DIR]
# Environment (all optional except HEALTHY and LABELLED):
#   FOLD=0            which fold of each splits.json
#   NGPU=<all>        processes (GPUs) for the training stages; default: every GPU nvidia-smi lists
#   PYTHON=python3    the Python that has the engine installed
#   STAGE1_STEPS / STAGE2_STEPS   override the paper's step counts (e.g. a short trial run)
#
# Resumable: a stage whose bundle exists is skipped; an interrupted training stage continues from the
# checkpoint in its work folder (`--resume`). Re-run the same command after an interruption.
set -euo pipefail

RUN=${1:-runs/paper_gpu}
: "${HEALTHY:?set HEALTHY to a prepare-dataset folder of healthy cases (e.g. IXI)}"
: "${LABELLED:?set LABELLED to a prepare-dataset folder of labelled cases (e.g. BraTS21)}"
FOLD=${FOLD:-0}
PYTHON=${PYTHON:-python3}
if [ -z "${NGPU:-}" ]; then
    NGPU=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
fi
[ "$NGPU" -ge 1 ] || { echo "no GPU found (nvidia-smi); set NGPU" >&2; exit 2; }
mkdir -p "$RUN/data"

# The fold's case lists as folders of links (the commands take folders of case folders).
"$PYTHON" - "$HEALTHY" "$LABELLED" "$FOLD" "$RUN/data" <<'EOF'
import json, os, sys
from pathlib import Path

healthy, labelled, fold, out = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
for source, parts in ((healthy, {"healthy_train": "train", "healthy_val": "val"}),
                      (labelled, {"labelled_train": "labelled_train", "labelled_val": "val", "test": "test"})):
    splits = json.loads((source / "splits.json").read_text(encoding="utf-8"))["folds"][fold]
    for name, key in parts.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for case in splits[key]:
            link = folder / case
            if not link.exists():
                os.symlink((source / "cases" / case).resolve(), link)
        print(f"{name}: {len(splits[key])} cases ({source.name} fold {fold} {key})")
EOF

TORCHRUN=("$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "$NGPU" -m AnomalySegLib)

train_stage() {  # train_stage NAME COMMAND ARGS... : skipped when the bundle exists, resumed when a checkpoint does
    local name=$1; shift
    local out="$RUN/$name" work="$RUN/$name.training"
    if [ -f "$out/model.json" ]; then echo "== $name: done earlier ($out)"; return; fi
    local resume=()
    [ -f "$work/checkpoint.pt" ] && resume=(--resume)
    echo "== $name: $NGPU process(es), $(date -u +%FT%TZ)"
    "${TORCHRUN[@]}" "$@" --out "$out" --work-dir "$work" --device cuda --no-progress "${resume[@]}"
}

train_stage stage1 train-recon --config recon_paper --data "$RUN/data/healthy_train" \
    ${STAGE1_STEPS:+--max-steps "$STAGE1_STEPS"}
train_stage stage2 train-seg --config seg_paper --recon "$RUN/stage1" --healthy "$RUN/data/healthy_train" \
    ${STAGE2_STEPS:+--max-steps "$STAGE2_STEPS"}

if [ ! -f "$RUN/model/model.json" ]; then
    echo "== calibration on the labelled validation cases (threshold, beta) and healthy validation cases (FPR presets)"
    "$PYTHON" -m AnomalySegLib calibrate --model "$RUN/stage2" --val "$RUN/data/labelled_val" \
        --healthy "$RUN/data/healthy_val" --out "$RUN/model" --device cuda
fi
echo "== evaluation on the test cases of fold $FOLD"
"$PYTHON" -m AnomalySegLib evaluate --model "$RUN/model" --data "$RUN/data/test" -o "$RUN/evaluation" \
    --device cuda --overwrite
echo "== done: model $RUN/model, report $RUN/evaluation"
