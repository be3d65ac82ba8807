"""Bad inputs, as a new user would give them: each gets a clear error before any work, or a documented conversion,
never a silent wrong answer. The table in the README lists the same cases; every test asserts the exact outcome.

Sections: integer PCM and long clips through the pipeline (the model folder's feature extractor); handler.py
payloads; model folders; synthetic noise on very short clips; the demo's inputs; dataset_scripts on broken files;
the pre-flight check of run_nser.py.
"""

import base64
import io
import json
import logging
import os
import stat

import numpy as np
import pytest
import soundfile
import torch
from conftest import tone
from datasets import Audio, Dataset, load_from_disk
from transformers import AutoFeatureExtractor, WhisperFeatureExtractor, pipeline

from handler import EndpointHandler
from nser.augment import NoiseAugmentation, make_noisy_testset
from nser.model_card import render_model_card
from nser.model_folder import finalize_model_folder, is_local_path
from nser.noise import measured_snr_db
from nser.noise_bank import NoiseBank
from tiny_models import LABELS, tiny_model

RATE = 16000
WINDOW_SECONDS = 2  # the tiny model's window (Whisper's is 30 s)
SPEECH = tone(1.0, 300.0)  # float32 in [-0.3, 0.3]


def pcm(samples, dtype):
    """`samples` (floats in [-1, 1)) as integer PCM of `dtype`, the way a WAV reader returns it."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return np.round(samples * 128 + 128).astype(np.uint8)
    return np.round(samples * 2.0 ** (8 * dtype.itemsize - 1)).astype(dtype)


def scores(predictions):
    return {p["label"]: p["score"] for p in predictions}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model saved the way run_nser.py saves one (save_pretrained, then finalize_model_folder)."""
    folder = tmp_path_factory.mktemp("bad-inputs") / "model"
    model = tiny_model(seed=0, use_decoder=False)
    model.config.backbone_config._name_or_path = str(folder.parent / "local-whisper")  # as from_whisper on a folder
    model.save_pretrained(folder)
    finalize_model_folder(folder, model.build_feature_extractor(), backbone_id=None)
    return folder


@pytest.fixture(scope="module")
def classifier(model_dir):
    return pipeline("audio-classification", model=str(model_dir), trust_remote_code=True)


@pytest.fixture(scope="module")
def handler(model_dir):
    return EndpointHandler(str(model_dir))


# ----------------------------------------------------------------------------- pipeline: integer PCM, long clips
@pytest.mark.parametrize("dtype", ["int16", "int32", "int8", "uint8"])
def test_pipeline_reads_integer_pcm_as_pcm(classifier, dtype):
    samples = pcm(SPEECH, dtype)
    expected = scores(classifier(_as_float(samples)))
    assert scores(classifier(samples)) == pytest.approx(expected, abs=1e-6)
    assert scores(classifier(samples)) != pytest.approx(scores(classifier(samples.astype(np.float32))), abs=1e-6)


def _as_float(samples):
    """What the integer samples mean, computed independently of the code under test."""
    scale = {"int8": 128.0, "int16": 32768.0, "int32": 2147483648.0}
    if samples.dtype == np.uint8:
        return ((samples.astype(np.float64) - 128) / 128).astype(np.float32)
    return (samples.astype(np.float64) / scale[samples.dtype.name]).astype(np.float32)


@pytest.mark.parametrize("dtype", ["int64", "uint16"])
def test_pipeline_refuses_integer_types_that_are_not_pcm(classifier, dtype):
    with pytest.raises(ValueError, match=f"audio: samples of dtype {dtype} are neither float nor integer PCM"):
        classifier(np.zeros(1600, dtype=dtype))


def test_pipeline_warns_when_it_truncates_a_long_clip(classifier, caplog):
    with caplog.at_level(logging.WARNING):
        classifier(tone(3.0).astype(np.float32))
    assert "clip 0 is 3.0 s long: only its first 2 s are classified" in caplog.text


def test_model_folder_loads_without_remote_code_as_plain_whisper(model_dir):
    extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    assert type(extractor) is WhisperFeatureExtractor
    with_code = AutoFeatureExtractor.from_pretrained(model_dir, trust_remote_code=True)
    assert type(with_code).__name__ == "NserFeatureExtractor" and with_code.n_samples == WINDOW_SECONDS * RATE


# ----------------------------------------------------------------------------- handler.py
def wav_bytes(samples, rate=RATE, subtype="FLOAT"):
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, 'no audio in the request: expected {"inputs": .*; got keys \\[\\]'),
        ({"parameters": {"top_k": 1}}, "no audio in the request: .*; got keys \\['parameters'\\]"),
        ({"inputs": "speech.wav"}, "inputs: a string must be base64-encoded audio file bytes; this one is not valid base64 .*: str 'speech.wav'"),
        ({"inputs": "bm90IGF1ZGlv"}, "inputs: 9 bytes that FFmpeg cannot decode as audio"),  # base64 of "not audio"
        ({"inputs": "UklGRg"}, "not valid base64 \\(Incorrect padding\\)"),
        ({"inputs": b""}, "inputs: empty audio payload \\(0 bytes\\)"),
        ({"inputs": b"this is text, not audio"}, "inputs: 23 bytes that FFmpeg cannot decode as audio"),
        ({"inputs": []}, "inputs: audio is empty \\(no samples\\)"),
        ({"inputs": None}, "inputs: expected .*; got NoneType None"),
        ({"inputs": 3}, "inputs: expected .*; got int 3"),
        ({"inputs": ["a", "b"]}, "inputs: samples must be numbers; got dtype <U1"),
        ({"inputs": [[0.1, 0.2], [0.3]]}, "inputs: samples must be a flat list of numbers; got a ragged nested list"),
        ({"inputs": [1200, -32768, 512]}, "inputs: expected float samples in \\[-1, 1\\]; got values up to 32768, which looks like integer PCM"),
        ({"inputs": np.array([0.1, np.nan], dtype=np.float32)}, "inputs: audio contains NaN or Inf samples"),
        ({"inputs": np.zeros(4, dtype=np.int64)}, "inputs: samples of dtype int64 are neither float nor integer PCM"),
        ({"inputs": {"raw": [0.1] * 800}}, "inputs: an audio object needs \"raw\" and \"sampling_rate\"; missing \\['sampling_rate'\\]"),
        ({"inputs": {"raw": [0.1] * 800, "sampling_rate": 8}}, "inputs.sampling_rate: expected a whole number of Hz in \\[1000, 384000\\]; got int 8"),
        ({"inputs": {"raw": [0.1] * 800, "sampling_rate": "8000"}}, "inputs.sampling_rate: .*; got str '8000'"),
        ({"inputs": [0.1] * 800, "parameters": [3]}, "parameters: expected an object like {\"top_k\": 3}; got list \\[3\\]"),
        ({"inputs": [0.1] * 800, "parameters": {"topk": 3}}, "parameters: unknown \\['topk'\\]; accepted: \\['top_k', 'long_audio'\\]"),
        ({"inputs": [0.1] * 800, "parameters": {"top_k": 0}}, "parameters.top_k: expected a positive integer \\(1..4\\) or null for every label; got int 0"),
        ({"inputs": [0.1] * 800, "parameters": {"top_k": -1}}, "parameters.top_k: .*got int -1"),
        ({"inputs": [0.1] * 800, "parameters": {"top_k": 1.5}}, "parameters.top_k: .*got float 1.5"),
        ({"inputs": [0.1] * 800, "parameters": {"top_k": True}}, "parameters.top_k: .*got bool True"),
        ({"inputs": [0.1] * 800, "parameters": {"long_audio": "split"}}, "parameters.long_audio: expected one of \\['truncate', 'windows'\\]; got str 'split'"),
    ],
)
def test_handler_answers_a_malformed_request_with_one_clear_error(handler, payload, message):
    with pytest.raises(ValueError, match=message):
        handler(payload)


def test_handler_parameters_null_means_no_parameters(handler):
    assert handler({"inputs": SPEECH.tolist(), "parameters": None}) == handler({"inputs": SPEECH.tolist()})
    assert len(handler({"inputs": SPEECH.tolist(), "parameters": None})) == len(LABELS)


def test_handler_top_k(handler):
    everything = handler({"inputs": SPEECH.tolist()})
    assert handler({"inputs": SPEECH.tolist(), "parameters": {"top_k": 2}}) == everything[:2]
    assert handler({"inputs": SPEECH.tolist(), "parameters": {"top_k": 100}}) == everything


def test_handler_takes_a_list_at_another_rate_as_the_pipeline_would(handler, classifier):
    at_8k = tone(1.0, 300.0, rate=8000)
    for payload in ({"raw": at_8k.tolist(), "sampling_rate": 8000}, {"inputs": {"raw": at_8k.tolist(), "sampling_rate": 8000}},
                    {"inputs": {"array": at_8k, "sampling_rate": 8000}}):
        assert scores(handler(payload)) == pytest.approx(scores(classifier({"raw": at_8k, "sampling_rate": 8000})), abs=1e-6)


@pytest.mark.parametrize("dtype", ["int16", "int32", "uint8"])
def test_handler_scales_integer_pcm_arrays(handler, dtype):
    samples = pcm(SPEECH, dtype)
    assert scores(handler({"inputs": samples})) == pytest.approx(scores(handler({"inputs": _as_float(samples)})), abs=1e-6)
    assert scores(handler({"inputs": torch.from_numpy(samples)})) == pytest.approx(scores(handler({"inputs": samples})), abs=1e-6)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_handler_decodes_8_to_32_bit_files_to_the_same_answer(handler, subtype):
    expected = scores(handler({"inputs": SPEECH.tolist()}))
    for payload in (wav_bytes(SPEECH, subtype=subtype), base64.b64encode(wav_bytes(SPEECH, subtype=subtype)).decode()):
        assert scores(handler({"inputs": payload})) == pytest.approx(expected, abs=2e-3 if subtype == "PCM_U8" else 1e-4)


def test_handler_stereo_and_44k_files_and_arrays_are_converted(handler):
    expected = scores(handler({"inputs": SPEECH.tolist()}))
    stereo = np.stack([SPEECH, SPEECH])
    assert scores(handler({"inputs": stereo})) == pytest.approx(expected, abs=1e-6)
    assert scores(handler({"inputs": stereo.T.copy()})) == pytest.approx(expected, abs=1e-6)
    for rate in (8000, 44100, 48000):
        clip = tone(1.0, 300.0, rate=rate)
        assert scores(handler({"inputs": wav_bytes(clip, rate)})) == pytest.approx(expected, abs=2e-3)


def test_handler_long_clip_is_truncated_with_a_warning_or_classified_in_windows(handler, classifier, caplog):
    long_clip = np.concatenate([tone(2.0, 300.0), tone(2.0, 900.0, amplitude=0.05), tone(1.0, 500.0)])  # 5 s, window 2 s
    with caplog.at_level(logging.WARNING):
        truncated = handler({"inputs": long_clip})
    assert 'audio is 5.0 s long: only the first 2 s are classified; pass "parameters": {"long_audio": "windows"}' in caplog.text
    assert scores(truncated) == pytest.approx(scores(classifier(long_clip[: 2 * RATE])), abs=1e-6)
    windows = [long_clip[:32000], long_clip[32000:64000], long_clip[-32000:]]  # the last window ends with the clip
    per_window = [scores(classifier(window)) for window in windows]
    expected = {label: sum(w[label] for w in per_window) / 3 for label in LABELS}
    answer = handler({"inputs": long_clip, "parameters": {"long_audio": "windows"}})
    assert scores(answer) == pytest.approx(expected, abs=1e-6)
    assert [p["score"] for p in answer] == sorted((p["score"] for p in answer), reverse=True)


# ----------------------------------------------------------------------------- model folders
def test_model_folder_has_no_local_path_and_every_file_is_readable(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert "_name_or_path" not in config and "_name_or_path" not in config["backbone_config"]
    assert str(model_dir.parent) not in (model_dir / "config.json").read_text()
    umask = os.umask(0)
    os.umask(umask)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in model_dir.iterdir()}
    assert modes == {name: 0o666 & ~umask for name in modes}
    assert {"model.safetensors", "feature_extraction_nser.py", "preprocessor_config.json"} <= set(modes)


def test_a_hub_backbone_id_replaces_the_local_path(tmp_path):
    model = tiny_model(use_decoder=False)
    model.config.backbone_config._name_or_path = str(tmp_path / "whisper-base")
    model.save_pretrained(tmp_path / "model")
    finalize_model_folder(tmp_path / "model", model.build_feature_extractor(), backbone_id="openai/whisper-base")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["backbone_config"]["_name_or_path"] == "openai/whisper-base"


@pytest.mark.parametrize(
    ("name", "local"),
    [("openai/whisper-base", False), ("whisper-base", False), ("/data/models/whisper-base", True),
     ("../shared/models/whisper-base", True), ("./whisper", True), ("~/whisper", True), ("a/b/c", True), ("", False)],
)
def test_is_local_path(name, local):
    assert is_local_path(name) is local


def test_model_card_names_a_local_base_model_without_path_or_broken_link(tmp_path):
    rows = [{"condition": "clean", "noise_type": "clean", "snr_db": None, "labels": LABELS, "num_examples": 8,
             "macro_f1": 0.5, "ua": 0.5, "wa": 0.5, "weighted_f1": 0.5}]
    card = render_model_card(
        rows, model_name="model", base_model=str(tmp_path / "whisper-base"), dataset_name=str(tmp_path / "casia"),
        label_names=LABELS, command="python run_nser.py", config_summary={"pooling": "mean"},
    )
    text = str(card)
    assert "huggingface.co//" not in text and "huggingface.co/" + str(tmp_path) not in text
    assert "whisper-base (a local copy)" in text and "Trained on casia (a local copy)" in text
    assert "base_model:" not in text.split("---")[1]  # the Hub's metadata takes only a Hub id


# ----------------------------------------------------------------------------- synthetic noise, any clip length
@pytest.mark.parametrize("category", ["white", "pink"])
@pytest.mark.parametrize("samples", [1, 2, 160, 1599, 1600])
def test_synthetic_noise_mixes_a_clip_of_any_length(category, samples):
    speech = torch.from_numpy(tone(1.0)[:samples].copy()) + 0.1
    bank = NoiseBank().split("train")
    entry = bank.entries_for(category)[0]
    noise = bank.load(entry, samples, torch.Generator().manual_seed(0))
    assert noise.numel() == max(samples, 1600)
    clips = Dataset.from_dict({"audio": [{"array": speech.numpy(), "sampling_rate": RATE}], "id": ["short"]}).cast_column("audio", Audio())
    augmented = NoiseAugmentation(bank, [category], snr_range=(5.0, 5.0), clean_probability=0.0)(clips[:1])
    assert augmented["noise_type"] == [category] and augmented["audio"][0]["array"].shape == (samples,)
    test = make_noisy_testset(clips, NoiseBank().split("test"), [0.0], [category])
    stored = test.cast_column("audio", Audio(decode=False))[0]["audio"]["bytes"]
    mixture = torch.from_numpy(soundfile.read(io.BytesIO(stored), dtype="float32")[0])
    assert mixture.shape == (samples,) and measured_snr_db(speech, mixture) == pytest.approx(0.0, abs=1e-2)


# ----------------------------------------------------------------------------- the demo
@pytest.fixture(scope="module")
def demo_app():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    pytest.importorskip("gradio", reason="the demo tests need gradio: pip install -r demo/requirements.txt")
    from demo import app

    return app


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32"])
def test_demo_reads_8_to_32_bit_files_scaled(demo_app, tmp_path, subtype):
    path = tmp_path / f"{subtype}.wav"
    soundfile.write(path, SPEECH, RATE, subtype=subtype)
    clip, notes = demo_app.read_clip(str(path), max_seconds=30)
    assert notes == [] and clip.abs().max().item() == pytest.approx(0.3, abs=0.01)
    torch.testing.assert_close(clip, torch.from_numpy(SPEECH), atol=1 / 64 if subtype == "PCM_U8" else 1e-4, rtol=0)


def test_demo_error_for_an_unreadable_upload_names_the_file_not_the_server_path(demo_app, tmp_path):
    upload = tmp_path / "gradio" / "0123abcd" / "my clip.wav"
    upload.parent.mkdir(parents=True)
    upload.write_text("not audio")
    with pytest.raises(ValueError, match="^my clip.wav: cannot decode audio") as error:
        demo_app.read_clip(str(upload), max_seconds=30)
    assert str(tmp_path) not in str(error.value)


def test_demo_offers_only_the_examples_of_the_models_corpus(demo_app, tmp_path):
    examples = []
    for corpus, noise in (("casia", "babble"), ("ravdess", "music"), ("mine", "babble")):
        path = tmp_path / "data" / corpus / "clip.flac"
        path.parent.mkdir(parents=True)
        soundfile.write(path, SPEECH, RATE)
        examples.append((str(path), noise, 5, corpus))
    casia_labels = list(demo_app.EXAMPLE_CORPUS_LABELS["casia"])
    assert [e[3] for e in demo_app._available_examples(examples, ["babble", "music"], casia_labels)] == ["casia", "mine"]
    ravdess_labels = list(demo_app.EXAMPLE_CORPUS_LABELS["ravdess"])[::-1]  # the order does not matter
    assert [e[3] for e in demo_app._available_examples(examples, ["babble", "music"], ravdess_labels)] == ["ravdess", "mine"]
    assert [e[3] for e in demo_app._available_examples(examples, ["babble"], LABELS)] == ["mine"]


def test_demo_mixes_a_10_ms_clip_with_synthetic_noise(demo_app):
    speech = torch.from_numpy(tone(0.01))  # 160 samples
    for category in ("white", "pink"):
        mixture, note = demo_app.add_noise(NoiseBank().split("test"), category, speech, 5)
        assert mixture.shape == (160,) and measured_snr_db(speech, mixture) == pytest.approx(5.0, abs=1e-3)


# ----------------------------------------------------------------------------- dataset_scripts on broken files
@pytest.fixture
def broken_casia(tmp_path):
    import fixtures_corpora

    root = fixtures_corpora.casia(tmp_path)
    (root / "wangzhe" / "sad" / "249.wav").write_bytes(b"")  # 0 bytes
    (root / "wangzhe" / "happy" / "248.wav").write_text("RIFF? no: a text file renamed .wav\n")
    return root


def test_dataset_script_stops_with_the_list_of_bad_files(broken_casia, tmp_path):
    from dataset_scripts import casia

    with pytest.raises(ValueError) as error:
        casia.prepare(broken_casia, tmp_path / "out")
    lines = str(error.value).splitlines()
    total = len(list(broken_casia.rglob("*.wav")))
    assert lines[0] == f"2 of {total} audio files cannot be used:"
    assert lines[1].startswith(f"  {(broken_casia / 'wangzhe' / 'happy' / '248.wav').resolve()}: not decodable audio (")
    assert lines[2] == f"  {(broken_casia / 'wangzhe' / 'sad' / '249.wav').resolve()}: empty file (0 bytes)"
    assert "pass --skip_bad_files to leave them out" in lines[3]
    assert not (tmp_path / "out").exists()  # nothing written


def test_dataset_script_skips_bad_files_and_lists_them_next_to_the_dataset(broken_casia, tmp_path):
    from dataset_scripts import casia

    total = len(list(broken_casia.rglob("*.wav")))
    casia.main(["--source_dir", str(broken_casia), "--output_dir", str(tmp_path / "out"), "--skip_bad_files"])
    dataset = load_from_disk(str(tmp_path / "out"))
    assert sum(split.num_rows for split in dataset.values()) == total - 2
    paths = {path for split in dataset.values() for path in split["path"]}
    assert "wangzhe/sad/249.wav" not in paths and "wangzhe/happy/248.wav" not in paths
    listed = (tmp_path / "out" / "bad_files.tsv").read_text().splitlines()
    assert listed[0] == "path\tproblem" and len(listed) == 3
    assert listed[2] == f"{(broken_casia / 'wangzhe' / 'sad' / '249.wav').resolve()}\tempty file (0 bytes)"


# ----------------------------------------------------------------------------- pre-flight check of run_nser.py
@pytest.fixture(scope="module")
def run_assets(tmp_path_factory):
    from corpus_fixtures import make_noise_folder
    from tiny_models import save_tiny_whisper

    root = tmp_path_factory.mktemp("preflight")
    clips = root / "clips"
    clips.mkdir()
    lines = ["path,label,speaker"]
    for speaker in ("s1", "s2", "s3"):
        for label in LABELS:
            soundfile.write(clips / f"{speaker}_{label}.wav", tone(0.5, 200 + 100 * LABELS.index(label)), RATE)
            lines.append(f"clips/{speaker}_{label}.wav,{label},{speaker}")
    good_manifest = root / "good.csv"
    good_manifest.write_text("\n".join(lines) + "\n")
    soundfile.write(clips / "silent.wav", np.zeros(8000, dtype=np.float32), RATE)
    (clips / "text.wav").write_text("not audio")
    (clips / "empty.wav").write_bytes(b"")
    bad_lines = lines + ["clips/silent.wav,sad,s3", "clips/text.wav,sad,s3", "clips/empty.wav,happy,s2"]
    bad_manifest = root / "bad.csv"
    bad_manifest.write_text("\n".join(bad_lines) + "\n")
    bad_noise = make_noise_folder(root / "bad_noise")
    (bad_noise / "hum" / "hum1.wav").write_text("not audio either")  # a test-split noise file
    return {"whisper": save_tiny_whisper(root / "whisper"), "good": good_manifest, "bad": bad_manifest,
            "noise": make_noise_folder(root / "noise"), "bad_noise": bad_noise, "root": root}


def run_arguments(assets, manifest, output_dir, *extra, noise="noise"):
    return [
        "--model_name_or_path", str(assets["whisper"]), "--manifest_csv", str(manifest), "--noise_dir", str(assets[noise]),
        "--output_dir", str(output_dir), "--config_overrides", "use_decoder=false", "--num_train_epochs", "1",
        "--report_to", "none", "--use_cpu", "true", "--test_snrs", "0", *extra,
    ]


def test_preflight_lists_every_problem_before_any_model_is_loaded(run_assets, monkeypatch):
    import nser.experiment
    import run_nser
    from nser.preflight import PreflightError

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the pre-flight check failed")

    monkeypatch.setattr(nser.experiment, "build_model", no_model)
    output_file = run_assets["root"] / "out.txt"
    output_file.write_text("a file, not a folder")
    arguments = run_arguments(
        run_assets, run_assets["bad"], output_file, "--test_noise_types", "whitee", "hum", "--train_noise_types", "hiss", "pink",
        "--test_snrs", "nan", "5", "--train_snr_low", "10", "--train_snr_high", "0", "--speed_factors", "0.9", "3",
        noise="bad_noise",
    )
    with pytest.raises(PreflightError) as error:
        run_nser.main(arguments)
    clips, noise = run_assets["root"] / "clips", run_assets["bad_noise"]
    problems = error.value.problems
    assert problems[:5] == [
        f"--output_dir {output_file}: {output_file} is a file, not a folder",
        "--test_snrs must be finite numbers of dB; got [nan]",
        "--train_snr_low 10.0 is above --train_snr_high 0.0",
        "--speed_factors: speed factors must be in [0.5, 2], got 3.0 in [0.9, 3.0]",
        "--test_noise_types ['whitee'] not found in the noise bank's test split; available: ['hiss', 'hum', 'pink', 'white']",
    ]
    assert problems[5].startswith(f"noise {(noise / 'hum' / 'hum1.wav')}: not decodable audio (")
    assert problems[6] == (f"train row 12: {(clips / 'silent.wav').resolve()}: silent (mean power 0): no SNR can be set "
                           "against it; remove the clip")
    assert problems[7].startswith(f"train row 13: {(clips / 'text.wav').resolve()}: cannot decode audio (")
    assert problems[8].startswith(f"train row 14: {(clips / 'empty.wav').resolve()}: cannot decode audio (")
    assert str(error.value).startswith("9 problem(s) found before training; nothing was trained:\n  - --output_dir")


def test_preflight_passes_a_good_run(run_assets, caplog):
    from nser.preflight import preflight
    from run_nser import parse_arguments

    model_args, data_args, noise_args, training_args, run_args = parse_arguments(
        run_arguments(run_assets, run_assets["good"], run_assets["root"] / "out", "--test_noise_types", "hiss", "white")
    )
    with caplog.at_level(logging.INFO, logger="nser.preflight"):
        preflight(data_args, noise_args, training_args)
    assert "pre-flight checks passed" in caplog.text


def test_speed_perturbation_without_training_noise_is_refused():
    from nser.arguments import NoiseArguments
    from nser.preflight import check_noise_arguments

    problems = check_noise_arguments(NoiseArguments(train_with_noise=False, speed_factors=[0.9, 1.1]))
    assert problems == ["--speed_factors perturbs the noisy training draws: it needs --train_with_noise true"]


@pytest.mark.parametrize(
    "speaker_normalization, clips, problem",
    [
        (False, 10, "--speaker_normalization_clips 10 needs --speaker_normalization true"),
        (True, 1, "--speaker_normalization_clips must be at least 2 (a std needs two clips), got 1"),
        (True, 2, None),
        (False, None, None),
    ],
)
def test_speaker_normalisation_enrolment_size_is_checked(speaker_normalization, clips, problem):
    from nser.arguments import DataArguments
    from nser.preflight import check_speaker_normalization

    data_args = DataArguments(speaker_normalization=speaker_normalization, speaker_normalization_clips=clips)
    assert check_speaker_normalization(data_args) == ([problem] if problem else [])
