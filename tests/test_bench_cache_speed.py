"""bench.cache_speed times epochs inside one Trainer run: the warm-up epoch is excluded, the rest are real epochs."""

from bench.cache_speed import EpochTimer, time_epochs
from test_feature_cache import feature_dataset
from tiny_models import tiny_model


def test_time_epochs_returns_the_median_of_the_epochs_after_the_first(tmp_path, monkeypatch):
    timers = []
    original_init = EpochTimer.__init__

    def remember(self):
        original_init(self)
        timers.append(self)

    monkeypatch.setattr(EpochTimer, "__init__", remember)
    seconds = time_epochs(tiny_model(use_decoder=False), feature_dataset(), epochs=3, output_dir=str(tmp_path))
    (timer,) = timers
    assert len(timer.seconds) == 4  # one warm-up epoch + three timed ones
    assert seconds == sorted(timer.seconds[1:])[1] and seconds > 0
