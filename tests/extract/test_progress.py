import io

from extract.progress import LineProgress, format_duration, progress_bar


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_format_duration():
    assert format_duration(42.4) == "42s"
    assert format_duration(725) == "12m05s"
    assert format_duration(3720) == "1h02m"
    assert format_duration(-3) == "0s"


def test_line_progress_writes_counts_rate_and_eta_at_the_interval_and_at_the_end():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(40, out, interval_s=30, clock=clock)
    clock.now += 10
    bar.update()  # before the interval: no line
    clock.now += 20
    bar.update(2)  # 3 done in 30 s: 6/min, 37 left -> 370 s
    clock.now += 5
    bar.update()  # within the interval of the last line
    clock.now += 265
    bar.update(36)
    bar.close()
    assert out.getvalue().splitlines() == [
        "extract: 0/40 reports",
        "extract: 3/40 reports (8%), 6.0 reports/min, ETA 6m10s",
        "extract: 40/40 reports (100%), 8.0 reports/min",
        "extract: 40/40 reports (100%), 8.0 reports/min, 5m00s elapsed",
    ]


def test_progress_bar_is_plain_lines_off_a_terminal_and_silent_when_disabled():
    out = io.StringIO()
    bar = progress_bar(3, stream=out)
    assert isinstance(bar, LineProgress)
    silent = progress_bar(3, enabled=False, stream=out)
    silent.update()
    silent.close()
    assert out.getvalue() == "extract: 0/3 reports\n"


def test_progress_bar_is_tqdm_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    bar = progress_bar(3, stream=Tty())
    assert type(bar).__name__ == "tqdm"
    bar.close()
