"""One script per corpus: `prepare(source_dir, ...)` turns the corpus, as distributed, into a DatasetDict."""
