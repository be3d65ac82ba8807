"""Benchmarks of nser, run from the repository root as modules (`python -m bench.speed`)."""

from pathlib import Path

# The read-only model and data beside the repository (../shared): every benchmark's default paths.
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WHISPER_BASE = SHARED / "models" / "whisper-base"
