"""Figures say what the runs logged: no empty panels, a diverging arm beside the others readable."""

import spgkit.figures as figures


def _drawn(monkeypatch, draw) -> list:
    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig))
    draw()
    return saved[0].axes


def test_curves_leave_out_metrics_no_run_logged_and_put_a_diverging_loss_on_a_log_axis(monkeypatch, tmp_path):
    # A one-epoch study without per-epoch validation (the quickstart): the loss alone, and SPG's
    # 96,634 against CAM's 1.3 on a log axis, so that CAM's point is not flattened onto zero.
    logs = {"cam": [{"epoch": "1", "loss": "1.3"}], "spg_b": [], "spg": [{"epoch": "1", "loss": "96634.2"}]}
    (ax,) = _drawn(monkeypatch, lambda: figures.curves_figure(logs, tmp_path / "curves.png"))
    assert ax.get_title() == "training loss" and ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.get_lines()] == ["cam", "spg"]
    # With validation logged, its panel comes back; losses within 100x of each other stay linear.
    logs = {arm: [{"epoch": str(e), "loss": str(2.0 / e), "val_top1_acc": str(40 + e)} for e in (1, 2)] for arm in ("cam", "acol")}
    loss, top1 = _drawn(monkeypatch, lambda: figures.curves_figure(logs, tmp_path / "curves.png"))
    assert loss.get_yscale() == "linear" and top1.get_title() == "val Top-1 Acc (%)"
    assert top1.get_lines()[0].get_ydata().tolist() == [41.0, 42.0]
