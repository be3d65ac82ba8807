"""WHAM! noise as a noise DatasetDict.

Corpus: Wichern et al., "WHAM!: Extending Speech Separation to Noisy Environments" (Interspeech 2019),
http://wham.whisper.ai/ (`wham_noise.zip`). Licence CC BY-NC 4.0.

Layout: `<source_dir>/{tr,cv,tt}/*.wav` (or `.flac`; `source_dir` is the `wham_noise` folder): binaural
urban ambience (restaurants, cafes, bars, parks) recorded in the San Francisco Bay Area; the `metadata/`
csv files are not needed.

Protocol: one category, "wham" (urban ambience, babble-like); WHAM!'s own partition is kept:
tr + cv -> train, tt -> test (`subcategory` is tr/cv/tt, `source` the file's path without extension).
"""

from nser import corpus

SPLITS = {"tr": "train", "cv": "train", "tt": "test"}


def prepare(source_dir, output_dir=None, push_to_hub=None, overwrite=False, skip_bad_files=False):
    """WHAM! noise as train (tr + cv) and test (tt)."""
    source_dir = corpus.check_inputs(source_dir, push_to_hub)
    rows = []
    for path in corpus.find_audio(source_dir, "*/*"):
        folder = path.parent.name
        rows.append(
            corpus.row(
                path,
                source_dir,
                category="wham",
                subcategory=folder,
                split=corpus.lookup(folder, SPLITS, "WHAM! folder", path),
                source=corpus.recording_id(path, source_dir),
            )
        )
    return corpus.save(rows, corpus.NOISE_FEATURES, output_dir, push_to_hub, overwrite, skip_bad_files)


def main(argv=None):
    corpus.run(prepare, corpus.argument_parser(__doc__), argv)


if __name__ == "__main__":
    main()
