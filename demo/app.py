"""nser demo, a Hugging Face Space: hear a clip mixed with noise at a chosen SNR and see how the emotion
probabilities and the ASR hypothesis of a trained `WhisperForNoisyEmotionClassification` change.

The work is done by small functions (load the model, read and check the input, mix, predict, format the
hypothesis) that know nothing of Gradio, so they are unit-tested on their own; `build_demo` only lays them
out. Run from the repository root (see demo/README.md):

    python -m demo.app --model outputs/nser-main/model --noise-dir ../shared/data/noise
"""

import argparse
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    WhisperFeatureExtractor,
    WhisperTokenizer,
)

from nser.audio import SAMPLING_RATE, decode_audio, is_silent, prepare_waveform
from nser.features import PaddingCollator, log_mel
from nser.noise import mix_at_snr
from nser.noise_bank import NoiseBank

logger = logging.getLogger(__name__)

# The folder the README's main job saves its trained model to; NSER_MODEL or --model override it.
DEFAULT_MODEL = "outputs/nser-main/model"
DEFAULT_NOISE_DIR = "../shared/data/noise"
# Two clips per corpus for one-click tries, read where they lie (the corpora are never copied here); the
# CASIA speaker is the one the main job holds out for testing:
# (path, noise, SNR dB, button label).
DEFAULT_EXAMPLES = (
    ("../shared/data/casia/ZhaoZuoxiang/angry/201.flac", "babble", 5, "CASIA angry (zh), babble 5 dB"),
    ("../shared/data/casia/ZhaoZuoxiang/happy/201.flac", "street", 0, "CASIA happy (zh), street 0 dB"),
    ("../shared/data/ravdess/Actor_01/03-01-05-02-01-01-01.flac", "music", 5, "RAVDESS angry (en), music 5 dB"),
    ("../shared/data/ravdess/Actor_02/03-01-04-02-02-01-02.flac", "white", 10, "RAVDESS sad (en), white 10 dB"),
)
# The labels of each example corpus: an example is offered only with a model trained on that label set (a CASIA
# model is not asked about RAVDESS's English actors, nor the reverse). Keyed by the corpus folder in the path.
EXAMPLE_CORPUS_LABELS = {
    "casia": ("angry", "fear", "happy", "neutral", "sad", "surprise"),
    "ravdess": ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
}
SNR_RANGE_DB = (-5, 30)
DEFAULT_SNR_DB = 5
SEED = 0  # the same input, noise and SNR always give the same mixture and the same answer
SILENCE_DB = -60.0
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
LANGUAGE_TOKEN = re.compile(r"<\|([a-z]{2,3})\|>")  # Whisper's language tokens: <|en|>, <|zh|>, <|haw|>
TRAIN_HINT = (
    "Train one first (see the README's quick start, `python run_nser.py ...`), or point the demo to a "
    "trained model folder or Hub id with `--model` or the `NSER_MODEL` environment variable."
)


class ModelUnavailableError(RuntimeError):
    """No trained model could be loaded; the page shows this message instead of the demo."""


@dataclass
class Classifier:
    """A loaded model with what it needs around it: features in, readable hypothesis out."""

    model: torch.nn.Module
    feature_extractor: WhisperFeatureExtractor
    tokenizer: WhisperTokenizer | None

    @property
    def labels(self) -> list[str]:
        return [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    @property
    def window_seconds(self) -> float:
        """Longest input the encoder sees (30 s for every Whisper); longer uploads are truncated to it."""
        return float(self.feature_extractor.chunk_length)

    @property
    def shows_hypothesis(self) -> bool:
        """True when the decoder reads the model's own ASR hypothesis, so there is a transcript to show."""
        return self.model.config.use_decoder and self.model.config.decoder_input == "hypothesis"


@dataclass
class Prediction:
    probabilities: dict[str, float]
    hypothesis_ids: list[int] | None  # decoder input (prompt + hypothesis), end-of-text padding removed


@dataclass
class Analysis:
    mixture: torch.Tensor  # what the model heard as "noisy", 16 kHz
    clean: Prediction
    noisy: Prediction
    notes: list[str]


# ----------------------------------------------------------------------------- loading
def load_classifier(model_path: str) -> Classifier:
    """Model, feature extractor and tokenizer from a folder or Hub id; `ModelUnavailableError` when absent."""
    try:
        # float32 whatever the checkpoint stores: float16 runs ~3.5x slower on CPU (../shared/models/README.md).
        model = AutoModelForAudioClassification.from_pretrained(model_path, trust_remote_code=True, dtype=torch.float32)
        feature_extractor = AutoFeatureExtractor.from_pretrained(model_path)
    except OSError as error:
        logger.warning("cannot load a model from %s: %s", model_path, error)
        raise ModelUnavailableError(f"No trained nser model found at `{model_path}`. {TRAIN_HINT}") from error
    if model.config.model_type != "nser":
        raise ModelUnavailableError(f"`{model_path}` is a {model.config.model_type} model, not an nser one. {TRAIN_HINT}")
    classifier = Classifier(model.eval(), feature_extractor, tokenizer=None)
    if classifier.shows_hypothesis:
        classifier.tokenizer = load_tokenizer(model_path, model.config)
    return classifier


def load_tokenizer(model_path: str, config) -> WhisperTokenizer | None:
    """The Whisper tokenizer of the model folder, else of its backbone when that is a local folder; None if
    neither has one. A tokenizer smaller than the model's vocabulary is rejected: transformers returns an
    empty one, without an error, for a folder that has no tokenizer files."""
    backbone_paths = [config.backbone_config._name_or_path, config.name_or_path]
    candidates = [model_path, *(path for path in backbone_paths if path and Path(path).is_dir())]
    for candidate in dict.fromkeys(candidates):
        try:
            tokenizer = WhisperTokenizer.from_pretrained(candidate)
        except OSError:  # a Hub id that cannot be reached
            continue
        if len(tokenizer) >= config.backbone_config.vocab_size:
            return tokenizer
    logger.warning("no Whisper tokenizer in %s: hypotheses are shown as token ids", candidates)
    return None


def load_noise_bank(noise_dir) -> NoiseBank:
    """Test-split noise (never heard in training) of `noise_dir`, plus white and pink; only those two when
    the folder is absent (e.g. on a Space, where the noise corpora are not uploaded)."""
    if noise_dir is None or not Path(noise_dir).is_dir():
        logger.warning("noise folder %s not found: only white and pink noise are offered", noise_dir)
        return NoiseBank().split("test")
    return NoiseBank.from_folder(noise_dir).split("test")


# ----------------------------------------------------------------------------- input
class _NoteHandler(logging.Handler):
    def __init__(self, notes: list[str]):
        super().__init__(logging.INFO)
        self.notes = notes

    def emit(self, record):
        self.notes.append(record.getMessage())


@contextmanager
def _conversion_notes(notes: list[str]):
    """Collects what nser.audio logs while converting an upload (channels averaged, resampled, truncated):
    the library reports every conversion by logging, and the page shows these messages as notes. Gradio runs
    one analysis at a time (its default concurrency limit), so the notes are this request's."""
    audio_logger = logging.getLogger("nser.audio")
    handler = _NoteHandler(notes)
    previous_level = audio_logger.level
    audio_logger.addHandler(handler)
    audio_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        audio_logger.removeHandler(handler)
        audio_logger.setLevel(previous_level)


def read_clip(path, max_seconds: float) -> tuple[torch.Tensor, list[str]]:
    """A 16 kHz mono clip of at most `max_seconds` from any file nser.audio reads, with notes on what was
    converted. Raises `ValueError` with a readable message for unreadable files and silence."""
    if not path:
        raise ValueError("No audio: record from the microphone or upload a file first.")
    name = Path(path).name
    notes = []
    if Path(path).suffix.lower() in VIDEO_SUFFIXES:
        notes.append(f"{name} is a video file: only its audio track is analysed.")
    with _conversion_notes(notes):
        try:
            waveform, rate = decode_audio(str(path), name=name)
        except ValueError as error:  # the page shows the upload's name, never the server's temporary path
            raise ValueError(str(error).replace(str(path), name).replace(str(Path(path).parent), "")) from None
        waveform = prepare_waveform(waveform, rate, name=name, max_seconds=max_seconds)
    if is_silent(waveform, threshold_db=SILENCE_DB):
        raise ValueError(
            f"{name} is silent (mean power below {SILENCE_DB:.0f} dBFS): the SNR is undefined for silence, "
            "so no noise level can be chosen. Record or upload speech."
        )
    return waveform, notes


# ----------------------------------------------------------------------------- noise and model
def add_noise(bank: NoiseBank, category: str, speech: torch.Tensor, snr_db: float, seed: int = SEED):
    """`speech` mixed with a test-split noise of `category` at `snr_db` (nser.noise.mix_at_snr), and a note
    naming the noise used. Seeded: the same inputs give the same file, offset and mixture."""
    generator = torch.Generator().manual_seed(seed)
    entries = bank.entries_for(category)
    entry = entries[int(torch.randint(len(entries), (1,), generator=generator))]
    noise = bank.load(entry, num_samples=speech.numel(), generator=generator)  # synthetic: at least 0.1 s
    mixture = mix_at_snr(speech, noise, float(snr_db), generator=generator)
    return mixture, f"Noise: {category} ({Path(entry.path).name}) at {float(snr_db):g} dB SNR."


def predict(classifier: Classifier, waveforms: list[torch.Tensor]) -> list[Prediction]:
    """Emotion probabilities (label -> probability) and decoder input of each 16 kHz clip, in one batch."""
    collate = PaddingCollator()
    batch = collate([{"input_features": log_mel(w, classifier.feature_extractor)} for w in waveforms])
    with torch.inference_mode():
        output = classifier.model(**batch)
    probabilities = output.logits.float().softmax(dim=-1)
    eos = classifier.model.backbone.generation_config.eos_token_id
    predictions = []
    for row, probs in enumerate(probabilities):
        ids = None if output.hypothesis_ids is None else [i for i in output.hypothesis_ids[row].tolist() if i != eos]
        predictions.append(Prediction(dict(zip(classifier.labels, probs.tolist())), ids))
    return predictions


def format_hypothesis(ids: list[int] | None, tokenizer: WhisperTokenizer | None) -> str:
    """The ASR hypothesis the decoder path read, with the language Whisper used: `[zh] 今天天气很好`."""
    if ids is None:
        return "(this model does not use the decoder, so it makes no ASR hypothesis)"
    if tokenizer is None:
        return f"token ids {' '.join(map(str, ids))} (no Whisper tokenizer with the model or its backbone to show text)"
    languages = [match[1] for token in tokenizer.convert_ids_to_tokens(ids) if (match := LANGUAGE_TOKEN.fullmatch(token))]
    text = tokenizer.decode(ids, skip_special_tokens=True).strip() or "(no words recognised)"
    return f"[{languages[0]}] {text}" if languages else text


def analyse(classifier: Classifier, bank: NoiseBank, audio_path, category: str, snr_db: float) -> Analysis:
    """The whole demo without the page: read and check the clip, mix in noise, classify clean and noisy."""
    speech, notes = read_clip(audio_path, classifier.window_seconds)
    mixture, noise_note = add_noise(bank, category, speech, snr_db)
    clean, noisy = predict(classifier, [speech, mixture])
    return Analysis(mixture, clean, noisy, [noise_note, *notes])


# ----------------------------------------------------------------------------- page
def _analyse_for_page(classifier: Classifier, bank: NoiseBank, audio_path, category, snr_db):
    """`analyse` as the page shows it; bad input becomes a warning and a message, never a traceback."""
    try:
        result = analyse(classifier, bank, audio_path, category, snr_db)
    except ValueError as error:
        gr.Warning(str(error))
        return None, None, None, "", "", f"**Cannot analyse this input.** {error}"
    notes = [*result.notes, "Playback is peak-normalised; the model heard the mixture unscaled."]
    return (
        (SAMPLING_RATE, result.mixture.numpy()),
        result.clean.probabilities,
        result.noisy.probabilities,
        format_hypothesis(result.clean.hypothesis_ids, classifier.tokenizer),
        format_hypothesis(result.noisy.hypothesis_ids, classifier.tokenizer),
        "\n".join(f"- {note}" for note in notes),
    )


def _example_fits(path, labels) -> bool:
    """False when the example's corpus (a folder named in EXAMPLE_CORPUS_LABELS) has other labels than the model."""
    corpora = [part for part in Path(path).parts if part.lower() in EXAMPLE_CORPUS_LABELS]
    return labels is None or not corpora or set(EXAMPLE_CORPUS_LABELS[corpora[-1].lower()]) == set(labels)


def _available_examples(examples, categories, labels=None) -> list[tuple]:
    """The examples whose clip exists here, whose noise is offered (a Space has neither corpus) and whose corpus
    has the model's labels."""
    return [
        example for example in examples
        if Path(example[0]).is_file() and example[1] in categories and _example_fits(example[0], labels)
    ]


def build_demo(model_path=DEFAULT_MODEL, noise_dir=DEFAULT_NOISE_DIR, examples=DEFAULT_EXAMPLES) -> gr.Blocks:
    """The page. Without a loadable model it only says how to get one."""
    title = "# nser: how noise changes speech emotion recognition"
    try:
        classifier = load_classifier(model_path)
    except ModelUnavailableError as error:
        with gr.Blocks(title="nser demo") as demo:
            gr.Markdown(f"{title}\n\n{error}")
        return demo
    bank = load_noise_bank(noise_dir)
    example_rows = _available_examples(examples, bank.categories, classifier.labels)

    def run(audio_path, category, snr_db):
        return _analyse_for_page(classifier, bank, audio_path, category, snr_db)

    with gr.Blocks(title="nser demo") as demo:
        gr.Markdown(
            f"{title}\n\nRecord or upload speech, pick a noise and an SNR: the model `{model_path}` classifies "
            f"the clean clip and the noisy mixture ({', '.join(classifier.labels)}). Noise files are from the "
            "test split, never heard in training. Clips longer than "
            f"{classifier.window_seconds:g} s are truncated."
        )
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Speech")
                category = gr.Dropdown(bank.categories, value=bank.categories[0], label="Noise (test split)")
                snr = gr.Slider(*SNR_RANGE_DB, value=DEFAULT_SNR_DB, step=1, label="SNR (dB)")
                button = gr.Button("Analyse", variant="primary")
            with gr.Column():
                noisy_audio = gr.Audio(label="Noisy mixture", type="numpy", interactive=False)
                message = gr.Markdown()
        with gr.Row():
            with gr.Column():
                clean_label = gr.Label(label="Clean: emotion probabilities")
                clean_text = gr.Textbox(label="Clean: ASR hypothesis", visible=classifier.shows_hypothesis)
            with gr.Column():
                noisy_label = gr.Label(label="Noisy: emotion probabilities")
                noisy_text = gr.Textbox(label="Noisy: ASR hypothesis", visible=classifier.shows_hypothesis)
        inputs = [audio, category, snr]
        outputs = [noisy_audio, clean_label, noisy_label, clean_text, noisy_text, message]
        button.click(run, inputs, outputs, api_name="predict")
        if example_rows:
            gr.Examples(
                [list(example[:3]) for example in example_rows], inputs, outputs, fn=run, cache_examples=False,
                run_on_click=True, example_labels=[example[3] for example in example_rows],
            )
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("NSER_MODEL", DEFAULT_MODEL),
                        help=f"trained model folder or Hub id (env NSER_MODEL; default {DEFAULT_MODEL})")
    parser.add_argument("--noise-dir", default=os.environ.get("NSER_NOISE_DIR", DEFAULT_NOISE_DIR),
                        help=f"noise folder with a test split (env NSER_NOISE_DIR; default {DEFAULT_NOISE_DIR})")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args()
    build_demo(args.model, args.noise_dir).launch()
