"""The training console: one aligned human line per logging step, not transformers' raw dicts."""

from __future__ import annotations

from finetune.training.console import step_line


def test_a_loss_record_becomes_one_aligned_line_with_the_time_left() -> None:
    logs = {"loss": 4.56789, "learning_rate": 0.0003, "tokens_per_second": 1834.4, "grad_norm": 1.2, "entropy": 3.0}
    line = step_line(5, 60, logs, elapsed=10.0, steps_done=5)
    assert line == "step  5/60  loss 4.5679  lr 3.00e-04     1,834 tok/s  00:10 elapsed, 01:50 left"
    assert "entropy" not in line and "{" not in line


def test_eval_records_get_their_own_line_and_the_end_summary_none() -> None:
    assert step_line(60, 60, {"eval_loss": 3.21}, 50.0, 60) == "step 60/60  eval loss 3.2100"
    assert step_line(60, 60, {"train_runtime": 50.0, "train_loss": 4.0}, 50.0, 60) is None


def test_hours_are_shown_when_the_run_is_long() -> None:
    line = step_line(100, 1000, {"loss": 1.0}, elapsed=3600.0, steps_done=100)
    assert line is not None and line.endswith("1:00:00 elapsed, 9:00:00 left")
