"""Quality of the ASR hypotheses the decoder path relies on, clean and in noise.

    python -m bench.hypothesis_quality --texts 201 202 203 204 --noise_types babble white --snr 0

CASIA ships no transcripts, but every speaker reads the same 50 sentences in every emotion, so the
hypotheses of one sentence should agree: the table gives, per condition, the share of empty hypotheses,
of hypotheses cut by the duration cap (`ceil(duration x hypothesis_tokens_per_second)`), of degenerate ones
(a token repeated 4 times in a row), the mean length in characters, and the mean character error rate
between hypotheses of the same sentence (a consistency proxy for CER: lower is better).
"""

import argparse
import itertools
import shlex
import sys
from pathlib import Path

import torch
import torchaudio
from datasets import Audio, Dataset
from transformers import WhisperTokenizer

from modeling_nser import WhisperForNoisyEmotionClassification
from nser.augment import make_noisy_testset, split_by_condition
from nser.features import PaddingCollator, make_feature_function
from nser.noise_bank import NoiseBank

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PROMPT_TOKENS = 4  # <|startoftranscript|><|lang|><|task|><|notimestamps|>


def clips(casia_dir, texts, speakers):
    files = sorted(p for p in Path(casia_dir).glob("*/*/*.flac") if p.stem in texts and p.parts[-3] in speakers)
    if not files:
        sys.exit(f"no CASIA clips for texts {texts} and speakers {speakers} under {casia_dir}")
    rows = {"audio": [str(f) for f in files], "text_id": [f.stem for f in files]}
    return Dataset.from_dict(rows).cast_column("audio", Audio(sampling_rate=16000))


def hypotheses(model, tokenizer, ds, batch_size=8):
    """(text, token count, cap) per clip, decoded by the model's own decoder path."""
    featurize = make_feature_function(model.build_feature_extractor(), label_column="none")
    features = ds.map(featurize, batched=True, remove_columns=["audio"])
    collate, results = PaddingCollator(), []
    for start in range(0, len(features), batch_size):
        batch = collate([{"input_features": f} for f in features[start: start + batch_size]["input_features"]])
        with torch.no_grad():
            states = model.extract_layer_states(batch["input_features"], batch["attention_mask"])
        seconds = batch["attention_mask"].sum(dim=1) / 100
        for ids, mask, duration in zip(states.hypothesis_ids, states.decoder_layer_mask, seconds):
            tokens = ids[mask][PROMPT_TOKENS:].tolist()
            cap = min(model.config.max_hypothesis_tokens, int(torch.ceil(duration * model.config.hypothesis_tokens_per_second)))
            results.append((tokenizer.decode(tokens, skip_special_tokens=True).strip(), tokens, cap))
    return results


def degenerate(tokens, run=4):
    return any(len(set(tokens[i: i + run])) == 1 for i in range(len(tokens) - run + 1))


def consistency_cer(texts, text_ids):
    """Mean character error rate between hypotheses of the same sentence (both directions averaged)."""
    rates = []
    for sentence in set(text_ids):
        group = [t for t, s in zip(texts, text_ids) if s == sentence]
        for a, b in itertools.combinations(group, 2):
            if a or b:
                rates.append(torchaudio.functional.edit_distance(a, b) / max(len(a), len(b)))
    return sum(rates) / len(rates) if rates else float("nan")


def row(name, results, text_ids):
    texts = [text for text, _, _ in results]
    n = len(results)
    return (f"| {name} | {n} | {100 * sum(not t for t in texts) / n:.1f} | {100 * sum(len(k) >= c for _, k, c in results) / n:.1f} "
            f"| {100 * sum(degenerate(k) for _, k, _ in results) / n:.1f} | {sum(map(len, texts)) / n:.1f} "
            f"| {100 * consistency_cer(texts, text_ids):.1f} | {texts[0]} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(SHARED / "models" / "whisper-base"))
    parser.add_argument("--casia_dir", default=str(SHARED / "data" / "casia"))
    parser.add_argument("--noise_dir", default=str(SHARED / "data" / "noise"))
    parser.add_argument("--texts", nargs="+", default=["201", "202", "203", "204"])
    parser.add_argument("--speakers", nargs="+", default=["ZhaoZuoxiang", "liuchanhg"])
    parser.add_argument("--noise_types", nargs="+", default=["babble", "white"])
    parser.add_argument("--snr", type=float, default=0.0)
    args = parser.parse_args(argv)
    model = WhisperForNoisyEmotionClassification.from_whisper(args.model, ["x"], asr_language="zh").eval()
    tokenizer = WhisperTokenizer.from_pretrained(args.model)
    ds = clips(args.casia_dir, args.texts, args.speakers)
    noisy = split_by_condition(make_noisy_testset(ds, NoiseBank.from_folder(args.noise_dir), [args.snr], args.noise_types))
    command = "python -m bench.hypothesis_quality " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(f"`{command}`: whisper-base greedy hypotheses (zh) from the 30 s padded encoder, as nser's decoder path "
          f"computes them; {len(ds)} CASIA clips (sentences {' '.join(args.texts)}, speakers {' '.join(args.speakers)}, "
          "every emotion)\n")
    print("| condition | clips | empty % | at length cap % | degenerate % | mean chars | same-sentence CER % | first hypothesis |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    print(row("clean", hypotheses(model, tokenizer, ds), ds["text_id"]))
    for name, condition in noisy.items():
        print(row(name, hypotheses(model, tokenizer, condition), condition["text_id"]))


if __name__ == "__main__":
    main()
