"""DEMAND (Diverse Environments Multichannel Acoustic Noise Database) as a noise DatasetDict.

Corpus: Thiemann, Ito & Vincent (2013), https://zenodo.org/record/1227121 (`<ENV>_16k.zip` or
`<ENV>_48k.zip`). Licence CC BY-SA 3.0.

Layout: `<source_dir>/<ENV>/ch01.wav ... ch16.wav` (or `.flac`): one 5-minute recording per environment
and microphone, ENV like DKITCHEN, NPARK, OOFFICE, PCAFETER, STRAFFIC, TMETRO.

Protocol: category = the environment group from ENV's first letter (D domestic, N nature, O office,
P public, S street, T transportation), `subcategory` = ENV. One channel is used (`channel`, default 1):
the 16 microphones record the same scene. There is one recording per environment, so each is cut in time:
the first `1 - test_fraction` (default 70%) is train, the rest test; `source` names the recording and the
segment in seconds (e.g. `DKITCHEN/ch01:0.0-210.0s`), so train and test never share a time segment.
The segments are stored in the dataset as 16-bit FLAC.
"""

import io
from functools import partial

import soundfile as sf

from nser import corpus

GROUPS = {"D": "domestic", "N": "nature", "O": "office", "P": "public", "S": "street", "T": "transportation"}


def _segment(path, start: int, stop: int) -> dict:
    """Frames [start, stop) of the file as FLAC bytes, an `Audio` value that needs no file on disk."""
    data, rate = sf.read(path, start=start, stop=stop, dtype="int16", always_2d=True)
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format="FLAC", subtype="PCM_16")
    return {"bytes": buffer.getvalue(), "path": None}


def prepare(source_dir, output_dir=None, channel=1, test_fraction=0.3, push_to_hub=None, overwrite=False, skip_bad_files=False):
    """DEMAND as train/test noise, each recording cut in time."""
    source_dir = corpus.check_inputs(source_dir, push_to_hub)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rows = []
    for path in corpus.find_audio(source_dir, f"*/ch{channel:02d}.*"):
        environment = path.parent.name
        group = corpus.lookup(environment[:1], GROUPS, "DEMAND environment group (first letter)", path.parent)
        info = sf.info(path)
        cut = round(info.frames * (1 - test_fraction))
        for split, start, stop in (("train", 0, cut), ("test", cut, info.frames)):
            seconds = f"{start / info.samplerate:.1f}-{stop / info.samplerate:.1f}s"
            rows.append(
                {
                    "audio": partial(_segment, path, start, stop),  # read only if not already saved
                    "path": path.relative_to(source_dir).as_posix(),
                    "category": group,
                    "subcategory": environment,
                    "split": split,
                    "source": f"{environment}/{path.stem}:{seconds}",
                }
            )
    return corpus.save(rows, corpus.NOISE_FEATURES, output_dir, push_to_hub, overwrite, skip_bad_files)


def main(argv=None):
    parser = corpus.argument_parser(__doc__)
    parser.add_argument("--channel", type=int, default=1, help="microphone 1..16")
    parser.add_argument("--test_fraction", type=float, default=0.3, help="last share of each recording in test")
    corpus.run(prepare, parser, argv)


if __name__ == "__main__":
    main()
