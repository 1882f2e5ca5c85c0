"""The EM pictures: one palette, label colours, segment outlines, to-scale x-z cuts."""

import numpy as np

from neurorecon.em.pictures import colour, outline, palette, segmentation_sheet, write_png, xz


def test_palette_colours_and_outlines():
    pal = palette()
    assert pal.shape == (256, 3) and (pal[:128, 0] == pal[:128, 2]).all()       # greys first
    lab = np.zeros((6, 8), np.int64)
    lab[:, 2:4] = 5
    lab[:, 4:] = 7_000_000_000                                                   # 64-bit ids
    c = colour(lab)
    assert (c[lab == 0] == 128).all() and len(np.unique(c)) == 3 and (c[lab > 0] > 128).all()
    img = np.full((6, 8), 200, np.uint8)
    o = outline(img, lab)
    # where a label ends, its last pixel is drawn in its colour; elsewhere the image shows
    assert (o[:, 1] == 128).all() and (o[:, 3] == c[:, 3]).all() and c[0, 3] != c[0, 5]
    assert (o[:, [0, 2, 4, 5, 6, 7]] == 100).all()


def test_xz_cut_is_to_scale_and_the_sheet_is_a_png(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 255, (8, 20, 30), dtype=np.uint8)
    cut = xz(vol, 5)
    assert cut.shape == (20, 30) and (cut[0] == vol[0, 5]).all() and (cut[-1] == vol[-1, 5]).all()
    seg = (np.arange(30) // 10)[None, None, :].repeat(20, 1).repeat(8, 0) + 1
    sheet = segmentation_sheet(vol, seg, seg)
    assert sheet.shape == (20 * 2 + 20 + 2 * 4, 30 * 4 + 3 * 4)
    path = write_png(tmp_path / "s.png", sheet)
    assert path.read_bytes().startswith(b"\x89PNG")
