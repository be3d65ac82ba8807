"""Quality of the ASR hypotheses the decoder path relies on, clean and in noise, for each way of decoding.

    python -m bench.hypothesis_quality --texts 201 202 203 204 --noise_types babble street --snr 0

CASIA ships no transcripts, but every speaker reads the same 50 sentences in every emotion, so the
hypotheses of one sentence should agree: the table gives, per decoder path and condition, the share of empty
hypotheses, of hypotheses cut by the duration cap (`ceil(duration x hypothesis_tokens_per_second)`), of
degenerate ones (a token repeated 4 times in a row), the mean length in characters, the mean character error
rate between hypotheses of the same sentence (a consistency proxy for CER: lower is better) and, against the
`before` path (transformers' `generate` on the 30 s window), the share of identical hypotheses and the token
agreement (1 - token edit distance / longer length, averaged over clips).
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

from bench import SHARED, WHISPER_BASE
from bench.decoder_paths import BEFORE, DEFAULT_PATHS, build_paths
from nser.augment import make_noisy_testset, split_by_condition
from nser.features import PaddingCollator, make_feature_function
from nser.noise_bank import NoiseBank

PROMPT_TOKENS = 4  # <|startoftranscript|><|lang|><|task|><|notimestamps|>


def clips(casia_dir, texts, speakers):
    files = sorted(p for p in Path(casia_dir).glob("*/*/*.flac") if p.stem in texts and p.parts[-3] in speakers)
    if not files:
        sys.exit(f"no CASIA clips for texts {texts} and speakers {speakers} under {casia_dir}")
    rows = {"audio": [str(f) for f in files], "text_id": [f.stem for f in files]}
    return Dataset.from_dict(rows).cast_column("audio", Audio(sampling_rate=16000))


def hypotheses(path, tokenizer, features, batch_size=8):
    """(text, tokens, cap) per clip, decoded by one decoder path."""
    collate, results = PaddingCollator(), []
    for start in range(0, len(features), batch_size):
        batch = collate([{"input_features": f} for f in features[start: start + batch_size]["input_features"]])
        with torch.no_grad():
            states = path.extract(batch["input_features"], batch["attention_mask"])
        for ids, mask, cap in zip(states.hypothesis_ids, states.decoder_layer_mask, path.model.hypothesis_caps(batch["attention_mask"].bool())):
            tokens = ids[mask][PROMPT_TOKENS:].tolist()
            results.append((tokenizer.decode(tokens, skip_special_tokens=True).strip(), tokens, int(cap)))
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


def agreement(results, reference):
    """(% identical hypotheses, % token agreement) of `results` against `reference`, clip by clip."""
    if reference is None:
        return "", ""
    pairs = [(tokens, ref) for (_, tokens, _), (_, ref, _) in zip(results, reference)]
    same = 100 * sum(a == b for a, b in pairs) / len(pairs)
    tokens = 100 * sum(1 - torchaudio.functional.edit_distance(a, b) / max(len(a), len(b), 1) for a, b in pairs) / len(pairs)
    return f"{same:.1f}", f"{tokens:.1f}"


def row(path, condition, results, text_ids, reference):
    texts = [text for text, _, _ in results]
    n = len(results)
    return (f"| {path} | {condition} | {n} | {100 * sum(not t for t in texts) / n:.1f} "
            f"| {100 * sum(len(k) >= c for _, k, c in results) / n:.1f} | {100 * sum(degenerate(k) for _, k, _ in results) / n:.1f} "
            f"| {sum(map(len, texts)) / n:.1f} | {100 * consistency_cer(texts, text_ids):.1f} "
            f"| {' | '.join(agreement(results, reference))} | {texts[0]} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(WHISPER_BASE))
    parser.add_argument("--casia_dir", default=str(SHARED / "data" / "casia"))
    parser.add_argument("--noise_dir", default=str(SHARED / "data" / "noise"))
    parser.add_argument("--texts", nargs="+", default=["201", "202", "203", "204"])
    parser.add_argument("--speakers", nargs="+", default=["ZhaoZuoxiang", "liuchanhg"])
    parser.add_argument("--noise_types", nargs="+", default=["babble", "white"])
    parser.add_argument("--snr", type=float, default=0.0)
    parser.add_argument("--paths", nargs="+", default=list(DEFAULT_PATHS),
                        help=f"decoder paths: {BEFORE!r} (transformers generate, the reference), WINDOW:DTYPE[:cast], ct2:COMPUTE_TYPE or dynamic:int8")
    args = parser.parse_args(argv)
    paths = build_paths(args.model, "zh", args.paths)
    tokenizer = WhisperTokenizer.from_pretrained(args.model)
    ds = clips(args.casia_dir, args.texts, args.speakers)
    noisy = split_by_condition(make_noisy_testset(ds, NoiseBank.from_folder(args.noise_dir), [args.snr], args.noise_types))
    featurize = make_feature_function(paths[0].model.build_feature_extractor(), label_column="none")
    conditions = {"clean": ds, **noisy}
    features = {name: data.map(featurize, batched=True, remove_columns=["audio"]) for name, data in conditions.items()}
    command = "python -m bench.hypothesis_quality " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(f"`{command}`: whisper-base greedy hypotheses (zh) as nser's decoder path computes them, per decoder path; "
          f"{len(ds)} CASIA clips (sentences {' '.join(args.texts)}, speakers {' '.join(args.speakers)}, every emotion)\n")
    print("| decoder path | condition | clips | empty % | at length cap % | degenerate % | mean chars "
          "| same-sentence CER % | identical to before % | token agreement with before % | first hypothesis |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    before = {}
    for path, spec in zip(paths, args.paths):
        for name, data in features.items():
            results = hypotheses(path, tokenizer, data)
            if spec == BEFORE:
                before[name] = results
            print(row(path.name, name, results, conditions[name]["text_id"], None if spec == BEFORE else before.get(name)), flush=True)


if __name__ == "__main__":
    main()
