"""MUSAN noise, music and speech as a noise DatasetDict.

Corpus: Snyder, Chen & Povey, "MUSAN: A Music, Speech, and Noise Corpus" (2015),
https://www.openslr.org/17/ (`musan.tar.gz`). Licence: per file, CC BY 4.0 / CC0 / public domain / US
Government work (see each subset's LICENSE).

Layout: `<source_dir>/{noise,music,speech}/<subset>/*.wav` (or `.flac`), e.g.
`noise/free-sound/noise-free-sound-0000.wav`; the subsets' ANNOTATIONS/LICENSE/README files are ignored.

Protocol: categories noise, music and babble (MUSAN's speech, one talker per file, is the material the
noise mixer sums into babble); `subcategory` is the subset. Each file is one recording, so train and test
are disjoint by file (`source` = the file's path without extension): a deterministic sha1 hash of it puts
`test_fraction` (default 0.3) of the files in test. MUSAN does not say which speech files share a talker,
so babble talkers may recur across the splits.
"""

from nser import corpus

CATEGORIES = {"noise": "noise", "music": "music", "speech": "babble"}


def prepare(source_dir, output_dir=None, test_fraction=0.3, push_to_hub=None, overwrite=False, skip_bad_files=False):
    """MUSAN as train/test noise, split by file hash."""
    source_dir = corpus.check_inputs(source_dir, push_to_hub)
    rows = []
    for path in corpus.find_audio(source_dir, "*/*/*"):
        kind, subset = path.relative_to(source_dir).parts[:2]
        source = corpus.recording_id(path, source_dir)
        rows.append(
            corpus.row(
                path,
                source_dir,
                category=corpus.lookup(kind, CATEGORIES, "MUSAN folder", path),
                subcategory=subset,
                split=corpus.hash_split(source, test_fraction),
                source=source,
            )
        )
    return corpus.save(rows, corpus.NOISE_FEATURES, output_dir, push_to_hub, overwrite, skip_bad_files)


def main(argv=None):
    parser = corpus.argument_parser(__doc__)
    parser.add_argument("--test_fraction", type=float, default=0.3, help="share of files in test")
    corpus.run(prepare, parser, argv)


if __name__ == "__main__":
    main()
