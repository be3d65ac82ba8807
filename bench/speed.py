"""Throughput of nser's frozen feature extraction against Whisper's 30 s padded paths, as a markdown table.

Times what runs on the frozen backbone for every clip (`model.extract_layer_states(...)` under
`torch.no_grad()`: what a feature cache or inference computes) on clips of exactly 3 s and 8 s of real
speech (CASIA by default: consecutive files concatenated, then cropped), for four systems:

1. `nser dynamic`: the default config, the encoder runs on the clip's real length (`use_decoder=False`);
2. `nser pad_to_30s`: the same model with `pad_to_30s=True`, Whisper's standard 30 s window;
3. `transformers`: `WhisperForAudioClassification(use_weighted_layer_sum=True)` with the checkpoint's encoder,
   on features padded to 30 s as transformers requires; its whole forward is timed (the weighted sum, projector
   and classifier are its minimal path and cost next to nothing);
4. `use_decoder=True` with `asr_language` set, one row per decoder path (`--decoder_paths`, see
   `bench/decoder_paths.py`): `before` is the path as it was (dynamic encoder + 30 s padded encoder + transformers'
   `generate` + a second, teacher-forced decoder pass); `WINDOW:DTYPE` rows are today's fused greedy decoding
   (hypothesis and decoder states in one pass) on an `asr_window_seconds` window in `asr_dtype`; `ct2:COMPUTE_TYPE`
   rows take the window encoder and the hypothesis from CTranslate2; `dynamic:int8` runs the fused path on an
   int8 dynamically quantised copy.

clips/s, ms/clip and the speed-ups time the backbone only; the Whisper log-mel (`WhisperFeatureExtractor`,
through `nser.features.log_mel` for nser) is timed on its own and shown in its own column. Each number is the
median of `--repeats` timed calls (`time.perf_counter`) after `--warmup` untimed ones; the systems take turns
within each repeat, so a change of machine load during the run does not favour one of them.

Usage, from the repository root (the full default run takes several minutes on 2 CPU cores):
    python -m bench.speed                              # 3 s and 8 s clips, batch 1 and 8
    python -m bench.speed --corpus ravdess --language en --threads 1
    python -m bench.speed --decoder_paths before 30:float32   # decoder rows: the old path and today's default
    python -m bench.speed --quick                      # CI smoke test: batch 1, one timed call, no warm-up
"""

import argparse
import itertools
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import WhisperConfig, WhisperForAudioClassification

from bench import SHARED, WHISPER_BASE
from bench.decoder_paths import BEFORE_NAME, DEFAULT_PATHS, build_paths
from modeling_nser import SAMPLING_RATE, WhisperForNoisyEmotionClassification
from nser.audio import load_audio
from nser.features import PaddingCollator, log_mel

logger = logging.getLogger(__name__)

DEFAULT_DATA = SHARED / "data"
CORPUS_LANGUAGE = {"casia": "zh", "ravdess": "en"}  # the ASR language of each shared corpus
# The emotion head is never trained here; only its size matters (CASIA's six emotions).
LABELS = ("angry", "fear", "happy", "neutral", "sad", "surprise")
DYNAMIC, PADDED, TRANSFORMERS = "nser dynamic", "nser pad_to_30s", "transformers WhisperForAudioClassification"
DECODER = "nser use_decoder"


@dataclass
class System:
    """One way of getting features for a batch: waveforms -> model inputs (log-mel) -> backbone forward."""

    name: str
    featurize: Callable[[list[torch.Tensor]], dict]
    forward: Callable[[dict], object]


@dataclass
class Row:
    """Median seconds per batch of the log-mel and of the backbone, for one system, clip length and batch size."""

    system: str
    seconds: float
    batch: int
    log_mel_s: float
    backbone_s: float

    @property
    def clips_per_s(self):
        return self.batch / self.backbone_s


# ----------------------------------------------------------------------------------------------- audio
def speech_clips(corpus_dir, seconds, count):
    """`count` 16 kHz clips of exactly `seconds` s, each made of consecutive files of `corpus_dir` (sorted, so
    every run times the same audio) concatenated and cropped. Returns None when the folder has no audio."""
    files = sorted(p for p in Path(corpus_dir).rglob("*") if p.suffix in (".flac", ".wav"))
    if not files:
        return None
    samples = round(seconds * SAMPLING_RATE)
    files = itertools.cycle(files)
    clips = []
    for _ in range(count):
        parts, length = [], 0
        while length < samples:
            parts.append(load_audio(next(files)))
            length += parts[-1].numel()
        clips.append(torch.cat(parts)[:samples])
    return clips


def noise_like_clips(seconds, count, seed=0):
    """Fallback when no corpus is present: seeded Gaussian noise with a 4 Hz (syllable-rate) envelope."""
    rng = np.random.default_rng(seed)
    time_s = np.arange(round(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    envelope = 0.05 * (1.0 + np.sin(2 * np.pi * 4.0 * time_s))
    return [torch.from_numpy((rng.standard_normal(time_s.size) * envelope).astype(np.float32)) for _ in range(count)]


def benchmark_audio(data_dir, corpus, clip_seconds, count):
    """`{seconds: clips}` of real speech when `data_dir/corpus` has audio, else noise-like; and a description."""
    clips = {s: speech_clips(Path(data_dir) / corpus, s, count) for s in clip_seconds}
    if all(c is not None for c in clips.values()):
        return clips, f"real speech: consecutive {corpus} files ({Path(data_dir) / corpus}) concatenated and cropped"
    logger.warning("no audio under %s: timing synthetic noise-like audio instead", Path(data_dir) / corpus)
    return (
        {s: noise_like_clips(s, count) for s in clip_seconds},
        f"SYNTHETIC noise-like audio ({Path(data_dir) / corpus} has no audio): the decoder row's time depends on "
        "the hypothesis it decodes, so it is not that of speech",
    )


# ----------------------------------------------------------------------------------------------- systems
def nser_inputs(feature_extractor, waveforms):
    """Real-length log-mel of each clip (`nser.features.log_mel`), batched by the training collator."""
    return PaddingCollator()([{"input_features": log_mel(w, feature_extractor)} for w in waveforms])


def transformers_inputs(feature_extractor, waveforms):
    """Log-mel padded to the 30 s window, as `pipeline("audio-classification")` gives WhisperForAudioClassification."""
    out = feature_extractor(
        [w.numpy() for w in waveforms], sampling_rate=SAMPLING_RATE, return_attention_mask=False, return_tensors="pt"
    )
    return {"input_features": out["input_features"]}


def transformers_classifier(checkpoint, num_labels):
    """transformers' own Whisper classifier: the checkpoint's config and encoder weights, a weighted layer sum."""
    config = WhisperConfig.from_pretrained(checkpoint, use_weighted_layer_sum=True, num_labels=num_labels)
    model, info = WhisperForAudioClassification.from_pretrained(
        checkpoint, config=config, dtype=torch.float32, output_loading_info=True
    )
    missing = [key for key in info["missing_keys"] if key.startswith("encoder.")]
    if missing:
        raise ValueError(f"{checkpoint} lacks encoder weights for WhisperForAudioClassification: {missing[:5]}")
    return model.eval()


def build_systems(checkpoint, language, decoder_paths=DEFAULT_PATHS, labels=LABELS):
    """The systems compared, loaded from one Whisper checkpoint in float32: three encoder-only ones and one per
    decoder path."""
    build = partial(WhisperForNoisyEmotionClassification.from_whisper, checkpoint, list(labels))
    dynamic = build(use_decoder=False).eval()
    padded = build(use_decoder=False, pad_to_30s=True).eval()
    baseline = transformers_classifier(checkpoint, len(labels))
    feature_extractor = dynamic.build_feature_extractor()
    nser_featurize = partial(nser_inputs, feature_extractor)
    systems = [
        System(DYNAMIC, nser_featurize, lambda inputs: dynamic.extract_layer_states(**inputs)),
        System(PADDED, nser_featurize, lambda inputs: padded.extract_layer_states(**inputs)),
        System(TRANSFORMERS, partial(transformers_inputs, feature_extractor), lambda inputs: baseline(**inputs)),
    ]
    for path in build_paths(checkpoint, language, decoder_paths, labels):
        systems.append(System(f"{DECODER} ({language}): {path.name}", nser_featurize, lambda inputs, path=path: path.extract(**inputs)))
    return systems


# ----------------------------------------------------------------------------------------------- timing
def elapsed(function, argument):
    """Wall seconds of `function(argument)`."""
    start = time.perf_counter()
    function(argument)
    return time.perf_counter() - start


@torch.no_grad()
def measure(systems, waveforms, seconds, warmup, repeats):
    """One `Row` per system for one clip length and batch: medians over `repeats` calls after `warmup` ones. The
    systems take turns within each repeat, so a change of machine load hits them alike and the ratios hold up."""
    inputs = [system.featurize(waveforms) for system in systems]
    times = [[] for _ in systems]  # per system, one (log-mel s, backbone s) pair per timed call
    for call in range(warmup + repeats):
        for system, model_inputs, record in zip(systems, inputs, times):
            pair = (elapsed(system.featurize, waveforms), elapsed(system.forward, model_inputs))
            if call >= warmup:
                record.append(pair)
    return [
        Row(system.name, seconds, len(waveforms), *(statistics.median(column) for column in zip(*record)))
        for system, record in zip(systems, times)
    ]


def run_benchmark(systems, clips, batch_sizes, warmup, repeats):
    """Rows for every clip length, batch size and system; `clips[seconds]` holds at least max(batch_sizes) clips."""
    rows = []
    for seconds, waveforms in clips.items():
        for batch in batch_sizes:
            logger.info("timing %d systems on %g s clips, batch %d", len(systems), seconds, batch)
            rows.extend(measure(systems, waveforms[:batch], seconds, warmup, repeats))
    return rows


# ----------------------------------------------------------------------------------------------- report
def markdown_table(rows):
    """The table; speed-ups are backbone clips/s over that of the padded nser / transformers row of the same
    clip length and batch size (dynamic over padded is the headline)."""
    reference = {(r.system, r.seconds, r.batch): r.clips_per_s for r in rows}
    lines = [
        "| system | clip length | batch | log-mel ms/clip (excluded) | backbone ms/clip | clips/s "
        "| speed-up vs nser pad_to_30s | speed-up vs transformers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speedups = [r.clips_per_s / reference[(name, r.seconds, r.batch)] for name in (PADDED, TRANSFORMERS)]
        lines.append(
            f"| {r.system} | {r.seconds:g} s | {r.batch} | {1000 * r.log_mel_s / r.batch:.1f} "
            f"| {1000 * r.backbone_s / r.batch:.1f} | {r.clips_per_s:.2f} | {speedups[0]:.2f}x | {speedups[1]:.2f}x |"
        )
    return "\n".join(lines)


def cpu_name():
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or "unknown CPU"


def header(command, checkpoint, audio, warmup, repeats):
    return "\n".join(
        [
            f"Command: `{command}`",
            "",
            f"- torch {torch.__version__}, transformers {transformers.__version__}, {cpu_name()}, "
            f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
            f"- model: {checkpoint} (float32); audio: {audio}",
            f"- median of {repeats} timed call(s) after {warmup} warm-up call(s), `time.perf_counter`, "
            "`torch.no_grad()`; clips/s, ms/clip and speed-ups time the backbone only, the log-mel is timed separately",
        ]
    )


def target_lines(rows, seconds=3.0, target=8.0, decoder_target=4.0):
    """The README's targets on `seconds` s clips: dynamic length at least `target` x the padded throughput, and
    each decoder path at least `decoder_target` x the `before` decoder path's, measured in the same run."""
    speed = {(r.system, r.seconds, r.batch): r.clips_per_s for r in rows}
    before = {(clip, batch): value for (system, clip, batch), value in speed.items()
              if system.startswith(DECODER) and system.endswith(BEFORE_NAME)}
    lines = []
    for (system, clip, batch), clips_per_s in speed.items():
        if clip != seconds:
            continue
        if system == DYNAMIC:
            ratio, goal, what = clips_per_s / speed[(PADDED, clip, batch)], target, "dynamic vs padded"
        elif system.startswith(DECODER) and not system.endswith(BEFORE_NAME) and (clip, batch) in before:
            ratio, goal, what = clips_per_s / before[(clip, batch)], decoder_target, f"{system} vs before"
        else:
            continue
        verdict = "met" if ratio >= goal else "NOT met"
        lines.append(f"Target {what} >= {goal:g}x on {seconds:g} s clips, batch {batch}: {ratio:.2f}x, "
                     f"{1000 / clips_per_s:.0f} ms/clip ({verdict})")
    return lines


# ----------------------------------------------------------------------------------------------- command line
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(WHISPER_BASE), help="Whisper checkpoint (folder or Hub id)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder holding the corpus folders")
    parser.add_argument("--corpus", default="casia", help="corpus folder under --data (casia or ravdess)")
    parser.add_argument("--language", help="ASR language of the decoder row (default: zh for casia, en for ravdess)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[3.0, 8.0], help="clip lengths")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls; the median is reported")
    parser.add_argument("--decoder_paths", nargs="+", default=list(DEFAULT_PATHS),
                        help="decoder-path rows: 'before' (the old path), WINDOW:DTYPE (e.g. 30:float32) or "
                             "ct2:COMPUTE_TYPE (CTranslate2, e.g. ct2:int8) or dynamic:int8 (torch dynamic quantisation)")
    parser.add_argument("--quick", action="store_true", help="smoke test: batch 1, no warm-up, one timed call")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.warmup, args.repeats = [1], 0, 1
    args.language = args.language or CORPUS_LANGUAGE.get(args.corpus)
    if args.language is None:
        parser.error(f"--language is needed for --corpus {args.corpus} (known: {CORPUS_LANGUAGE})")
    if min(args.batch_sizes) < 1 or args.repeats < 1 or args.warmup < 0 or min(args.seconds) <= 0 or args.threads == 0:
        parser.error(
            f"--batch-sizes {args.batch_sizes}, --repeats {args.repeats}, --seconds {args.seconds} and --threads "
            f"{args.threads} must be positive, --warmup {args.warmup} at least 0"
        )
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # The transformers load report lists the decoder as unexpected and the new head as missing, as expected;
    # a missing encoder weight is checked in `transformers_classifier`.
    transformers.logging.set_verbosity_error()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    clips, audio = benchmark_audio(args.data, args.corpus, args.seconds, max(args.batch_sizes))
    systems = build_systems(args.model, args.language, args.decoder_paths)
    rows = run_benchmark(systems, clips, args.batch_sizes, args.warmup, args.repeats)
    command = " ".join(["python -m bench.speed", shlex.join(argv)]).strip()
    sections = [header(command, args.model, audio, args.warmup, args.repeats), markdown_table(rows)]
    sections.append("\n".join(target_lines(rows)))
    print("\n\n".join(section for section in sections if section))


if __name__ == "__main__":
    main()
