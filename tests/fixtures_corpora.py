"""Tiny synthetic copies of each corpus's distributed layout and file-naming code, for the dataset_scripts tests.

Clips are 0.1 s of noise written with soundfile; a few are 44.1/48 kHz stereo so that the tests see the
`Audio` cast resample and down-mix them. Nothing here is committed audio.
"""

import csv
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SECONDS = 0.1
DECODED_SAMPLES = 1600  # SECONDS at 16 kHz


def write_clip(path: Path, sampling_rate: int = 16_000, channels: int = 1, seconds: float = SECONDS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    sf.write(path, 0.1 * rng.standard_normal((round(seconds * sampling_rate), channels)), sampling_rate)
    return path


def decoded(dataset, index: int = 0):
    """(channels, samples) and rate of a row's audio as the dataset decodes it."""
    samples = dataset[index]["audio"].get_all_samples()
    return tuple(samples.data.shape), samples.sample_rate


def groups_by_split(dataset_dict, column: str) -> dict[str, set]:
    return {name: set(split[column]) for name, split in dataset_dict.items()}


def assert_disjoint(dataset_dict, column: str):
    groups = groups_by_split(dataset_dict, column)
    names = list(groups)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert groups[a].isdisjoint(groups[b]), f"{column} values in both {a} and {b}: {groups[a] & groups[b]}"


def casia(root: Path, speakers=("liuchanhg", "wangzhe", "ZhaoZuoxiang")) -> Path:
    """3 speakers x 6 emotions x 2 sentences; the first clip is 44.1 kHz stereo."""
    for speaker in speakers:
        for emotion in ("angry", "fear", "happy", "neutral", "sad", "surprise"):
            for text_id in ("201", "202"):
                write_clip(root / "casia" / speaker / emotion / f"{text_id}.wav")
    write_clip(root / "casia" / "ZhaoZuoxiang" / "angry" / "201.wav", 44_100, 2)
    return root / "casia"


def ravdess(root: Path, actors=range(1, 7)) -> Path:
    """6 actors x 8 emotions (neutral normal intensity only, others normal and strong); FLAC like ../shared;
    plus a song file (channel 02) that must be skipped."""
    for actor in actors:
        for emotion in range(1, 9):
            for intensity in (1,) if emotion == 1 else (1, 2):
                name = f"03-01-{emotion:02d}-{intensity:02d}-01-01-{actor:02d}.flac"
                write_clip(root / "ravdess" / f"Actor_{actor:02d}" / name, 48_000 if actor == 1 else 16_000)
    write_clip(root / "ravdess" / "Actor_01" / "03-02-03-01-01-01-01.wav")
    return root / "ravdess"


def emodb(root: Path, speakers=("03", "08", "09", "10", "11")) -> Path:
    """5 speakers x 7 emotion letters, text a01 version a (and b for anger); plus the labels folder."""
    for speaker in speakers:
        for letter in "WLEAFTN":
            write_clip(root / "emodb" / "wav" / f"{speaker}a01{letter}a.wav")
        write_clip(root / "emodb" / "wav" / f"{speaker}b02Wb.wav")
    (root / "emodb" / "lablaut").mkdir()
    (root / "emodb" / "lablaut" / "03a01Fa.lab").write_text("# not audio\n")
    return root / "emodb"


def crema_d(root: Path, actors=range(1001, 1007)) -> Path:
    """6 actors x 6 emotions, sentence DFA; levels XX (and HI for ANG)."""
    for actor in actors:
        for emotion in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD"):
            write_clip(root / "crema_d" / "AudioWAV" / f"{actor}_DFA_{emotion}_XX.wav")
        write_clip(root / "crema_d" / "AudioWAV" / f"{actor}_IEO_ANG_HI.wav")
    return root / "crema_d"


# TESS's own (inconsistent) folder spellings.
TESS_FOLDERS = {
    "OAF": ("angry", "disgust", "Fear", "happy", "neutral", "Pleasant_surprise", "Sad"),
    "YAF": ("angry", "disgust", "fear", "happy", "neutral", "pleasant_surprised", "sad"),
}
TESS_CODES = ("angry", "disgust", "fear", "happy", "neutral", "ps", "sad")  # the file names' last part


def tess(root: Path) -> Path:
    """2 speakers x 7 emotions x 2 words, one folder deeper as in the Dataverse zip."""
    top = root / "tess" / "TESS Toronto emotional speech set data"
    for speaker, folders in TESS_FOLDERS.items():
        for folder, code in zip(folders, TESS_CODES):
            for word in ("back", "bar"):
                write_clip(top / f"{speaker}_{folder}" / f"{speaker}_{word}_{code}.wav")
    return root / "tess"


# (utterance, code) per session n: improvised dialog of a female-led session, scripted of a male-led one.
IEMOCAP_UTTERANCES = (
    ("Ses0{n}F_impro01_F000", "neu"),
    ("Ses0{n}F_impro01_M001", "exc"),
    ("Ses0{n}F_impro01_F002", "fru"),
    ("Ses0{n}M_script01_1_F000", "ang"),
    ("Ses0{n}M_script01_1_M001", "sad"),
    ("Ses0{n}M_script01_1_M002", "hap"),
    ("Ses0{n}M_script01_1_F003", "xxx"),
)


def iemocap(root: Path) -> Path:
    """5 sessions x 7 labelled utterances (5 kept by the 4-class protocol), with the label files' other lines."""
    top = root / "IEMOCAP_full_release"
    for n in range(1, 6):
        lines = {}
        for i, (template, code) in enumerate(IEMOCAP_UTTERANCES):
            utterance = template.format(n=n)
            dialog = utterance.rsplit("_", 1)[0]
            write_clip(top / f"Session{n}" / "sentences" / "wav" / dialog / f"{utterance}.wav")
            lines.setdefault(dialog, ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]).extend(
                [f"[{i}.0100 - {i}.9000]\t{utterance}\t{code}\t[2.5000, 3.0000, 3.5000]", f"C-E1:\t{code};\t()", ""]
            )
        labels = top / f"Session{n}" / "dialog" / "EmoEvaluation"
        (labels / "Categorical").mkdir(parents=True)
        for dialog, text in lines.items():
            (labels / f"{dialog}.txt").write_text("\n".join(text))
    return top


MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season"]


def meld(root: Path, wav: bool = True) -> Path:
    """3 rows per split (emotions cycle), dia{i}_utt0; with `wav`, audio in wav/<split>/ (one .flac),
    else dummy mp4 files for extraction; dev row 2 has neither (MELD's missing clips)."""
    top = root / "MELD.Raw"
    emotions = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
    for s, (prefix, video_folder) in enumerate(
        (("train", "train_splits"), ("dev", "dev_splits_complete"), ("test", "output_repeated_splits_test"))
    ):
        top.mkdir(parents=True, exist_ok=True)
        with (top / f"{prefix}_sent_emo.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(MELD_HEADER)
            for i in range(3):
                emotion = emotions[(3 * s + i) % 7]
                writer.writerow([i + 1, f"Line {prefix} {i}.", f"Speaker{i}", emotion, "neutral", i, 0, 1])
                if prefix == "dev" and i == 2:
                    continue
                if wav:
                    write_clip(top / "wav" / prefix / f"dia{i}_utt0.{'flac' if i == 1 else 'wav'}", 48_000)
                else:
                    (top / video_folder).mkdir(exist_ok=True)
                    (top / video_folder / f"dia{i}_utt0.mp4").write_bytes(b"not a real mp4")
    return top


FAKE_FFMPEG = f"""#!{sys.executable}
# Stands in for ffmpeg: checks the audio-extraction arguments and writes a 0.1 s wav at the asked rate.
import sys
import numpy as np
import soundfile as sf
args = sys.argv[1:]
if "-vn" not in args or "-nostdin" not in args:
    sys.exit(2)
if open(args[args.index("-i") + 1], "rb").read().startswith(b"broken"):
    sys.stderr.write("moov atom not found\\n")
    sys.exit(1)
rate, channels = int(args[args.index("-ar") + 1]), int(args[args.index("-ac") + 1])
sf.write(args[-1], np.zeros((rate // 10, channels)), rate)
"""


def fake_ffmpeg(bin_dir: Path) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "ffmpeg"
    path.write_text(FAKE_FFMPEG)
    path.chmod(0o755)
    return path


def musan(root: Path) -> Path:
    """3 files in each of noise/free-sound, music/fma, speech/librivox (one 44.1 kHz stereo), plus text files."""
    top = root / "musan"
    for kind, subset in (("noise", "free-sound"), ("music", "fma"), ("speech", "librivox")):
        for i in range(3):
            stereo = kind == "music" and i == 0
            write_clip(top / kind / subset / f"{kind}-{subset}-{i:04d}.wav", 44_100 if stereo else 16_000, 1 + stereo)
        (top / kind / subset / "ANNOTATIONS").write_text("not audio\n")
    (top / "README").write_text("MUSAN\n")
    return top


def demand(root: Path, environments=("DKITCHEN", "NPARK", "STRAFFIC"), seconds: float = 1.0) -> Path:
    """3 environments, channels 1 and 2, 1 s each; NPARK at 48 kHz as in the 48k zips."""
    top = root / "DEMAND"
    for environment in environments:
        for channel in (1, 2):
            rate = 48_000 if environment == "NPARK" else 16_000
            write_clip(top / environment / f"ch{channel:02d}.wav", rate, seconds=seconds)
    return top


# (fold, clip, take, target, category, src_file): targets from each of the 5 major categories.
ESC50_CLIPS = (
    (1, "100032", "A", 0, "dog", "100032"),
    (1, "100038", "A", 14, "chirping_birds", "100038"),
    (2, "101296", "A", 19, "thunderstorm", "101296"),
    (3, "103415", "A", 25, "footsteps", "103415"),
    (4, "104089", "B", 34, "can_opening", "104089"),
    (5, "103199", "A", 42, "siren", "103199"),
    (5, "103199", "B", 42, "siren", "103199"),
    (5, "104456", "A", 1, "rooster", "104456"),
)


def esc50(root: Path) -> Path:
    top = root / "ESC-50-master"
    (top / "meta").mkdir(parents=True)
    with (top / "meta" / "esc50.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        for fold, clip, take, target, category, src_file in ESC50_CLIPS:
            name = f"{fold}-{clip}-{take}-{target}.wav"
            writer.writerow([name, fold, target, category, target == 0, src_file, take])
            write_clip(top / "audio" / name, 44_100)
    return top


def wham(root: Path) -> Path:
    """2 stereo 16 kHz files in each of tr, cv, tt, named as in WHAM!, plus the metadata folder."""
    top = root / "wham_noise"
    for folder in ("tr", "cv", "tt"):
        for i in range(2):
            write_clip(top / folder / f"40{folder}01{i}x_1.9857_01xo031a_-1.9857.wav", channels=2)
    (top / "metadata").mkdir()
    (top / "metadata" / "noise_meta_tr.csv").write_text("utterance_id,noise_file\n")
    return top


NOISE_FILES = {
    "babble": ("crowd-party", "noisex92-babble-train", "noisex92-babble-test"),
    "music": ("us8k-1-3-0-0", "us8k-2-3-0-0"),
    "street": ("us8k-3-1-0-0", "us8k-4-1-0-0"),
}
NOISE_TEST = {"noisex92-babble-test", "us8k-2-3-0-0", "us8k-4-1-0-0"}


def noise_folder(root: Path, metadata: bool = True) -> Path:
    """FLAC files in 3 category folders; with `metadata`, a metadata.csv whose paths start with `noise/`."""
    top = root / "noise"
    rows = []
    for category, stems in NOISE_FILES.items():
        for stem in stems:
            write_clip(top / category / f"{stem}.flac", 22_050 if category == "street" else 16_000)
            split = "test" if stem in NOISE_TEST else "train"
            rows.append([f"noise/{category}/{stem}.flac", category, stem.split("-")[0], split, "a source"])
    if metadata:
        with (top / "metadata.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "category", "subcategory", "split", "source"])
            writer.writerows(rows)
    return top
