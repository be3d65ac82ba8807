#!/usr/bin/env bash
# The README's main job: nser's default model on CASIA with real noise augmentation, measured by leave-one-speaker-out
# cross-validation (each of the four speakers tested once by a model trained on the other three; clean speech and
# every noise type x SNR), then one deployable model trained on all four speakers (validation: held-out sentences).
# Installs what it needs (apt FFmpeg libraries, a venv).
# Uses ../shared/models/whisper-base and ../shared/data when present; otherwise says loudly what it falls back to.
# Output folder: $NSER_OUTPUT_DIR (default outputs/nser-main); an existing finished run is never overwritten.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(bash scripts/setup_env.sh | tail -n 1)
PY="$VENV/bin/python"
export HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
SHARED=${NSER_SHARED:-../shared}
OUT=${NSER_OUTPUT_DIR:-outputs/nser-main}
args=(configs/main_job.json)
overrides=(--output_dir "$OUT")

if [ -d "$SHARED/models/whisper-base" ]; then
  overrides+=(--model_name_or_path "$SHARED/models/whisper-base")
else
  echo "!!! $SHARED/models/whisper-base not found: FALLING BACK to openai/whisper-base from the Hugging Face Hub (needs internet)" >&2
  overrides+=(--model_name_or_path openai/whisper-base)
fi

if [ -d "$SHARED/data/casia" ]; then
  # Folds by speaker (configs/main_job.json); validation = every training speaker's sentences 241-250.
  "$PY" -m dataset_scripts.casia --source_dir "$SHARED/data/casia" --output_dir data/casia
  overrides+=(--dataset_name data/casia)
elif [ -d "$SHARED/data/ravdess" ]; then
  echo "!!! $SHARED/data/casia not found: FALLING BACK to RAVDESS ($SHARED/data/ravdess), English, 3 folds of 4 actors" >&2
  "$PY" -m dataset_scripts.ravdess --source_dir "$SHARED/data/ravdess" --output_dir data/ravdess
  overrides+=(--dataset_name data/ravdess --cv_folds 3 --validation_column "" --validation_groups ""
             --config_overrides "use_decoder=false,asr_language=en")
else
  echo "!!! no corpus under $SHARED/data: prepare one with dataset_scripts/ and pass --dataset_name (see README)" >&2
  exit 2
fi

if [ -d "$SHARED/data/noise" ]; then
  overrides+=(--noise_dir "$SHARED/data/noise")
else
  echo "!!! $SHARED/data/noise not found: FALLING BACK to synthetic white and pink noise only" >&2
  overrides+=(--noise_dir "" --test_noise_types white pink --train_noise_types white pink)
fi

# HfArgumentParser reads either a config file or flags; merge them: flags from the file, then the overrides.
mapfile -t flags < <("$PY" -c 'import json,sys
for k, v in json.load(open(sys.argv[1])).items():
    print("--" + k)
    for x in (v if isinstance(v, list) else [v]):
        print(str(x).lower() if isinstance(x, bool) else x)' "${args[0]}")
start=$(date +%s)
"$PY" run_nser.py "${flags[@]}" "${overrides[@]}" "$@"
echo "main job wall time: $(( $(date +%s) - start )) s"
