#!/usr/bin/env bash
# The README's main job: train nser on CASIA (speaker-independent split) with real noise augmentation and
# evaluate clean speech and every noise type x SNR. Installs what it needs (apt FFmpeg libraries, a venv).
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
  # Test speaker: the script's default; the other three train, validation = their sentences 241-250.
  "$PY" -m dataset_scripts.casia --source_dir "$SHARED/data/casia" --output_dir data/casia-3spk --validation_speakers
  overrides+=(--dataset_name data/casia-3spk)
elif [ -d "$SHARED/data/ravdess" ]; then
  echo "!!! $SHARED/data/casia not found: FALLING BACK to RAVDESS ($SHARED/data/ravdess), English" >&2
  "$PY" -m dataset_scripts.ravdess --source_dir "$SHARED/data/ravdess" --output_dir data/ravdess
  overrides+=(--dataset_name data/ravdess --validation_column "" --validation_groups ""
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
