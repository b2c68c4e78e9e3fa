"""scripts/contact_sheet.py: columns from folders, rows from the common names, each cell the right image."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _helpers import load_script
from PIL import Image


@pytest.fixture(scope="module")
def cs():
    return load_script("contact_sheet")


def test_sheet_layout_and_cells(cs, tmp_path):
    colours = {"a": (255, 0, 0), "b": (0, 0, 255)}
    for col, rgb in colours.items():
        (tmp_path / col).mkdir()
        for k in range(4):
            shade = tuple(int(v * (k + 1) / 4) for v in rgb)
            Image.new("RGB", (40, 40), shade).save(tmp_path / col / f"f{k}.png")
    (tmp_path / "a" / "only_here.png").write_bytes((tmp_path / "a" / "f0.png").read_bytes())
    (tmp_path / "maps").mkdir()  # a template column: maps/NAME_dgsa.png
    for k in range(4):
        Image.new("RGB", (40, 40), (0, 60 * k, 0)).save(tmp_path / "maps" / f"f{k}_dgsa.png")
    Image.new("RGB", (40, 40)).save(tmp_path / "maps" / "f0_guide0.png")
    out = tmp_path / "sheet.png"
    assert cs.main(["--out", str(out), "--every", "2", "--size", "32", f"A={tmp_path / 'a'}", f"B={tmp_path / 'b'}",
                    f"M={tmp_path / 'maps' / '{name}_dgsa.png'}"]) == 0
    sheet = np.asarray(Image.open(out))
    assert sheet.shape == (16 + 2 * 32, 3 * 32, 3)  # rows f0 and f2 (only_here is not in B), label strip on top
    for r, k in enumerate((0, 2)):
        for c, rgb in enumerate([*colours.values(), None]):
            cell = sheet[16 + r * 32 + 16, c * 32 + 16].astype(int)
            want = [0, 60 * k, 0] if c == 2 else [int(v * (k + 1) / 4) for v in rgb]
            assert np.abs(cell - want).max() <= 2


def test_bad_arguments_exit_2(cs, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "f0.png")
    for args in ([f"A={tmp_path / 'nope'}"], [str(tmp_path / "a")], ["--names", "f9", f"A={tmp_path / 'a'}"]):
        with pytest.raises(SystemExit) as e:
            cs.main(["--out", str(tmp_path / "s.png"), *args])
        assert e.value.code == 2
    assert "missing in some column: f9" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


def test_demo_sheet_rows_cells_and_readable_labels(tmp_path):
    """scripts/demo_sheet.py (``make demo``'s picture): a row per restored face, five cells from the example input,
    the maps and the restored face, a missing map grey, each label yellow on a dark strip."""
    ds = load_script("demo_sheet")
    cell = ds.CELL
    for sub in ("restored_faces", "maps", "records"):
        (tmp_path / sub).mkdir()
    Image.new("RGB", (128, 128), (200, 30, 30)).save(tmp_path / "restored_faces" / "astronaut_lq.png")
    Image.new("RGB", (128, 128), (30, 200, 30)).save(tmp_path / "maps" / "astronaut_lq_restorer.png")
    Image.new("L", (128, 128), 255).save(tmp_path / "maps" / "astronaut_lq_dgsa.png")  # no guide0: a grey cell
    rec = {"faces": [{"restorer": {"std_star": 1.84, "start_step": 366}}]}
    (tmp_path / "records" / "astronaut_lq.json").write_text(json.dumps(rec))
    assert ds.main(str(tmp_path)) == 0
    sheet = np.asarray(Image.open(tmp_path / "demo_sheet.png")).astype(int)
    assert sheet.shape == (cell, 5 * cell, 3)
    example = np.asarray(Image.open(ds.ROOT / "src/dynface/examples/astronaut_lq.png").convert("RGB")).astype(int)
    h = example.shape[0]
    # below the label strip each cell holds its image: the example input (nearest), restorer, grey, map, restored
    y = cell - 5
    assert np.abs(sheet[y, 2] - example[int((y + 0.5) * h / cell), int(2.5 * h / cell)]).max() <= 1
    for c, want in enumerate([None, (30, 200, 30), (128, 128, 128), (255, 255, 255), (200, 30, 30)]):
        if want is not None:
            assert np.abs(sheet[cell // 2, c * cell + cell // 2] - want).max() <= 2, c
    strip = sheet[:14, : 5 * cell]
    yellow = (strip[..., 0] > 200) & (strip[..., 1] > 200) & (strip[..., 2] < 80)
    dark = strip.max(axis=-1) < 30
    assert dark.mean() > 0.6 and yellow.sum() > 100  # the labels are drawn, on dark
    for c in range(5):  # every cell has its label
        assert yellow[:, c * cell:(c + 1) * cell].any(), c
