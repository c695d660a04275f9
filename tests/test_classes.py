"""Activation maximisation (`robeval classes`, smooth-kernels Sec. 4.3): the class images
raise their class's logit from the shared noise input, stay in the box, are seeded, and
the command writes the figure and table."""

from __future__ import annotations

import pandas as pd
import torch
from typer.testing import CliRunner

from robeval.analysis.classes import maximise_classes, start_image
from robeval.cli import app


def test_each_image_raises_its_class_and_is_recognised(digits_model) -> None:
    start, images = maximise_classes(digits_model, (1, 8, 8), range(10), steps=100, lr=0.02, seed=3)
    assert images.shape == (10, 1, 8, 8) and float(images.min()) >= 0 and float(images.max()) <= 1
    assert torch.equal(start, start_image((1, 8, 8), 3))
    with torch.no_grad():
        before = digits_model(start.unsqueeze(0))[0]
        after = digits_model(images)
    gains = after.diagonal() - before
    assert (gains > 0).all(), gains
    assert int((after.argmax(1) == torch.arange(10)).sum()) >= 9
    again = maximise_classes(digits_model, (1, 8, 8), range(10), steps=100, lr=0.02, seed=3)[1]
    assert torch.equal(images, again)
    unchanged = maximise_classes(digits_model, (1, 8, 8), [2, 5], steps=0, seed=3)[1]
    assert torch.equal(unchanged, start.expand(2, 1, 8, 8))


def test_cli_writes_grid_table_and_arrays(digits_checkpoint, tmp_path) -> None:
    out = tmp_path / "cls"
    result = CliRunner().invoke(app, ["classes", str(digits_checkpoint), "--steps", "60", "--lr", "0.02",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "classes.csv")
    assert len(table) == 10 and table["prob"].between(0, 1).all()
    assert (out / "classes.png").stat().st_size > 0 and (out / "classes.npz").is_file()
    bad = CliRunner().invoke(app, ["classes", str(digits_checkpoint), "--lr", "0", "--out", str(out)])
    assert bad.exit_code != 0 and "--lr" in bad.output and "Traceback" not in bad.output
