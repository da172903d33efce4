"""The worker's garbage collection thresholds come from ``TALKSTREAM_GC_THRESHOLDS``."""
import gc

from streams.app import make_app
from streams.settings import Settings


def test_make_app_sets_the_configured_thresholds(tmp_path):
    before = gc.get_threshold()
    try:
        make_app(Settings(gc_thresholds=(1234, 5, 6), data_dir=str(tmp_path)), app_id="gc-thresholds-test")
        assert gc.get_threshold() == (1234, 5, 6)
    finally:
        gc.set_threshold(*before)


def test_the_default_collects_young_objects_less_often_than_python():
    assert Settings().gc_thresholds[0] > 700
    assert Settings(_env_file=None).gc_thresholds == (50000, 20, 10)


def test_thresholds_parse_from_the_environment(monkeypatch):
    monkeypatch.setenv("TALKSTREAM_GC_THRESHOLDS", "[2000,10,5]")
    assert Settings().gc_thresholds == (2000, 10, 5)
