"""demo/app.py: its functions on a tiny random model and synthetic audio, the running app through gradio_client,
and the rendered page in headless Chromium."""

import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import tone
from transformers import WhisperFeatureExtractor, WhisperForAudioClassification

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio", reason="the demo tests need gradio: pip install -r demo/requirements.txt")
gradio_client = pytest.importorskip("gradio_client", reason="the demo tests need gradio_client (installed with gradio)")

from demo import app  # noqa: E402  (after the skip: the module imports gradio)
from nser.noise import measured_snr_db  # noqa: E402
from tiny_models import LABELS, SPECIAL, tiny_model, tiny_whisper_config  # noqa: E402

WHISPER_BASE = Path("../shared/models/whisper-base")
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PROMPT = [SPECIAL["decoder_start"], SPECIAL["en"], SPECIAL["transcribe"], SPECIAL["notimestamps"]]


def write(path, samples, rate=16000):
    soundfile.write(path, samples, rate, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nser-tiny")
    tiny_model(seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier(model_dir):
    return app.load_classifier(str(model_dir))


@pytest.fixture
def bank(noise_folder):
    return app.load_noise_bank(noise_folder)


# ----------------------------------------------------------------------------- loading
def test_load_classifier_reads_labels_window_and_finds_no_tokenizer(classifier):
    assert classifier.labels == LABELS
    assert classifier.window_seconds == 2.0  # the tiny model's window
    assert classifier.shows_hypothesis
    assert classifier.tokenizer is None  # its folder has none and its backbone is not a folder


def test_missing_model_says_how_to_train(tmp_path):
    with pytest.raises(app.ModelUnavailableError, match="No trained nser model found at `.*absent`. Train one first"):
        app.load_classifier(str(tmp_path / "absent"))


def test_a_model_that_is_not_nser_is_refused(tmp_path):
    WhisperForAudioClassification(tiny_whisper_config()).save_pretrained(tmp_path)
    WhisperFeatureExtractor().save_pretrained(tmp_path)
    with pytest.raises(app.ModelUnavailableError, match="is a whisper model, not an nser one. Train one first"):
        app.load_classifier(str(tmp_path))


def test_encoder_only_model_makes_no_hypothesis_and_the_page_hides_it(tmp_path):
    tiny_model(use_decoder=False).save_pretrained(tmp_path)
    classifier = app.load_classifier(str(tmp_path))
    (prediction,) = app.predict(classifier, [torch.from_numpy(tone(1.0))])
    assert not classifier.shows_hypothesis
    assert prediction.hypothesis_ids is None and list(prediction.probabilities) == LABELS
    demo = app.build_demo(str(tmp_path), noise_dir=None, examples=())
    assert [block.visible for block in demo.blocks.values() if isinstance(block, gr.Textbox)] == [False, False]


def test_page_without_model_shows_the_message_not_the_demo(tmp_path):
    demo = app.build_demo(model_path=str(tmp_path / "absent"), noise_dir=None, examples=())
    markdowns = [block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown)]
    assert len(markdowns) == 1 and "see the README's quick start" in markdowns[0]
    assert not [block for block in demo.blocks.values() if isinstance(block, (gr.Audio, gr.Label))]


@pytest.mark.skipif(not WHISPER_BASE.is_dir(), reason="needs ../shared/models/whisper-base (its tokenizer)")
def test_tokenizer_from_the_model_folder_or_the_local_backbone(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "with-tokenizer")
    app.WhisperTokenizer.from_pretrained(WHISPER_BASE).save_pretrained(tmp_path / "with-tokenizer")
    assert len(app.load_tokenizer(str(tmp_path / "with-tokenizer"), model.config)) == 51865
    model.config.backbone_config._name_or_path = str(WHISPER_BASE)
    assert len(app.load_tokenizer(str(tmp_path / "elsewhere"), model.config)) == 51865


def test_noise_bank_without_folder_offers_white_and_pink(tmp_path):
    assert app.load_noise_bank(tmp_path / "absent").categories == ["pink", "white"]


def test_noise_bank_keeps_the_test_split_only(noise_folder):
    bank = app.load_noise_bank(noise_folder)
    assert bank.categories == ["babble", "music", "pink", "street", "white"]
    assert {entry.split for entry in bank.entries} == {"test"}


# ----------------------------------------------------------------------------- input checks
def test_read_clip_converts_stereo_8k_with_notes(tmp_path):
    stereo = np.stack([tone(1.0, 220, rate=8000), tone(1.0, 330, rate=8000)], axis=1)
    waveform, notes = app.read_clip(write(tmp_path / "stereo.wav", stereo, 8000), max_seconds=30)
    assert waveform.shape == (16000,)
    assert notes == ["stereo.wav: averaging 2 channels to mono", "stereo.wav: resampling from 8000 Hz to 16000 Hz"]


def test_read_clip_truncates_a_two_minute_file_with_a_note(tmp_path):
    waveform, notes = app.read_clip(write(tmp_path / "long.wav", tone(120.0)), max_seconds=30)
    assert waveform.shape == (30 * 16000,)
    assert notes == ["long.wav: 120.00 s long, truncated to 30.00 s"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("silence.wav", np.zeros(16000, dtype=np.float32), "silence.wav is silent .* the SNR is undefined for silence"),
        ("broken.wav", b"this is not audio", "broken.wav: cannot decode audio"),
    ],
)
def test_read_clip_rejects_silence_and_unreadable_files(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write(path, content)
    with pytest.raises(ValueError, match=message):
        app.read_clip(path, max_seconds=30)


def test_read_clip_without_audio():
    with pytest.raises(ValueError, match="No audio: record from the microphone or upload a file first"):
        app.read_clip(None, max_seconds=30)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command to write a video file")
def test_read_clip_video_uses_its_audio_track_or_says_it_has_none(tmp_path):
    video = ["-f", "lavfi", "-i", "testsrc=duration=1:size=32x32:rate=5"]
    sine = ["-f", "lavfi", "-i", "sine=frequency=220:duration=1:sample_rate=16000"]
    ffmpeg = ["ffmpeg", "-loglevel", "error", "-y", *video]
    subprocess.run([*ffmpeg, *sine, "-shortest", str(tmp_path / "talk.mp4")], check=True)
    subprocess.run([*ffmpeg, str(tmp_path / "mute.mp4")], check=True)
    waveform, notes = app.read_clip(tmp_path / "talk.mp4", max_seconds=30)
    assert notes[0] == "talk.mp4 is a video file: only its audio track is analysed."
    assert abs(waveform.numel() - 16000) < 1600  # AAC framing pads up to ~0.1 s
    with pytest.raises(ValueError, match="cannot decode audio"):
        app.read_clip(tmp_path / "mute.mp4", max_seconds=30)


# ----------------------------------------------------------------------------- noise, model, hypothesis
def test_add_noise_hits_the_snr_and_is_repeatable(bank):
    speech = torch.from_numpy(tone(1.0))
    mixture, note = app.add_noise(bank, "babble", speech, -5)
    again, _ = app.add_noise(bank, "babble", speech, -5)
    assert torch.equal(mixture, again)
    assert measured_snr_db(speech, mixture) == pytest.approx(-5.0, abs=1e-4)
    assert note.startswith("Noise: babble (babble-") and note.endswith(".wav) at -5 dB SNR.")


@pytest.mark.parametrize("category", ["white", "pink"])
def test_add_noise_synthetic(bank, category):
    speech = torch.from_numpy(tone(0.5))
    mixture, note = app.add_noise(bank, category, speech, 10)
    assert measured_snr_db(speech, mixture) == pytest.approx(10.0, abs=1e-4)
    assert note == f"Noise: {category} (synthetic:{category}) at 10 dB SNR."


def test_add_noise_to_a_clip_shorter_than_the_shortest_noise(bank):
    speech = torch.from_numpy(tone(0.05))  # 800 samples, below nser.noise.MIN_NOISE_SAMPLES
    mixture, _ = app.add_noise(bank, "pink", speech, 0)
    assert measured_snr_db(speech, mixture) == pytest.approx(0.0, abs=1e-4)


def test_predict_gives_every_label_a_probability_and_the_decoder_input(classifier):
    (prediction,) = app.predict(classifier, [torch.from_numpy(tone(1.0))])
    assert list(prediction.probabilities) == LABELS
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert prediction.hypothesis_ids[:4] == PROMPT
    assert SPECIAL["eos"] not in prediction.hypothesis_ids


def test_predict_in_one_batch_equals_one_by_one(classifier):
    clean = torch.from_numpy(tone(1.2))
    noisy = clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    together = app.predict(classifier, [clean, noisy])
    alone = [app.predict(classifier, [clip])[0] for clip in (clean, noisy)]
    for batched, single in zip(together, alone):
        assert batched.hypothesis_ids == single.hypothesis_ids
        torch.testing.assert_close(
            torch.tensor(list(batched.probabilities.values())), torch.tensor(list(single.probabilities.values())),
            atol=1e-6, rtol=0,
        )


def test_format_hypothesis_without_decoder_or_tokenizer():
    assert app.format_hypothesis(None, None) == "(this model does not use the decoder, so it makes no ASR hypothesis)"
    assert app.format_hypothesis([90, 92, 94, 96, 7], None) == (
        "token ids 90 92 94 96 7 (no Whisper tokenizer with the model or its backbone to show text)"
    )


@pytest.mark.skipif(not WHISPER_BASE.is_dir(), reason="needs ../shared/models/whisper-base (its tokenizer)")
def test_format_hypothesis_shows_language_and_text():
    tokenizer = app.WhisperTokenizer.from_pretrained(WHISPER_BASE)
    prompt = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|zh|>", "<|transcribe|>", "<|notimestamps|>"])
    text = tokenizer("今天天气很好", add_special_tokens=False).input_ids
    assert app.format_hypothesis(prompt + text, tokenizer) == "[zh] 今天天气很好"
    assert app.format_hypothesis(prompt, tokenizer) == "[zh] (no words recognised)"


def test_analyse_end_to_end(classifier, bank, tmp_path):
    result = app.analyse(classifier, bank, write(tmp_path / "clip.wav", tone(1.5)), "music", 0)
    assert result.mixture.shape == (24000,)
    assert result.notes[0].startswith("Noise: music (music-")
    assert list(result.clean.probabilities) == list(result.noisy.probabilities) == LABELS


def test_page_handler_turns_bad_input_into_a_message(classifier, bank, tmp_path):
    silent = write(tmp_path / "silence.wav", np.zeros(8000, dtype=np.float32))
    with pytest.warns(UserWarning, match="SNR is undefined for silence"):
        outputs = app._analyse_for_page(classifier, bank, silent, "white", 5)
    assert outputs[:5] == (None, None, None, "", "")
    assert outputs[5].startswith("**Cannot analyse this input.** silence.wav is silent")


# ----------------------------------------------------------------------------- the running app
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def running_app(model_dir, tmp_path_factory):
    """The app on a free localhost port, synthetic noise only (no noise folder), in a background thread."""
    demo = app.build_demo(model_path=str(model_dir), noise_dir=None, examples=())
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory):
    return write(tmp_path_factory.mktemp("clips") / "tone.wav", tone(1.5))


def test_api_predict_returns_every_label_with_a_score(running_app, speech_file):
    client = gradio_client.Client(running_app, verbose=False)
    audio, clean, noisy, clean_text, noisy_text, message = client.predict(
        gradio_client.handle_file(str(speech_file)), "white", 10, api_name="/predict"
    )
    assert soundfile.info(audio).duration == 1.5
    for label in (clean, noisy):
        scores = {item["label"]: item["confidence"] for item in label["confidences"]}
        assert sorted(scores) == sorted(LABELS)
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert label["label"] == max(scores, key=scores.get)
    assert clean_text.startswith("token ids 90 92 94 96") and noisy_text.startswith("token ids 90 92 94 96")
    assert message.startswith("- Noise: white (synthetic:white) at 10 dB SNR.")


def test_api_reports_bad_input_in_the_page(running_app, tmp_path):
    client = gradio_client.Client(running_app, verbose=False)
    silent = write(tmp_path / "quiet.wav", np.zeros(16000, dtype=np.float32))
    *_, message = client.predict(gradio_client.handle_file(str(silent)), "pink", 0, api_name="/predict")
    assert message.startswith("**Cannot analyse this input.** quiet.wav is silent")


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)")
def test_page_in_headless_chromium_shows_every_label_after_a_prediction(running_app, speech_file, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (demo/requirements-test.txt)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    try:
        driver.get(running_app)
        wait = WebDriverWait(driver, 20)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(speech_file))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "audio"))
        driver.find_element(By.XPATH, "//button[normalize-space()='Analyse']").click()
        wait.until(lambda d: "Noise: pink" in d.find_element(By.TAG_NAME, "body").text)  # the first noise offered
        page = driver.find_element(By.TAG_NAME, "body").text
        driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()
    assert all(page.count(label) >= 2 for label in LABELS)  # one bar chart each for clean and noisy
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
