import pytest
import torch

from fastdeblur.reference import patch_merge, patch_regroup, patch_split


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 1), (2, 2), (4, 2), (3, 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_split_matches_slicing_and_merge_inverts(rows, cols, channels_last):
    n, c, ph, pw = 3, 5, 7, 9
    x = torch.randn(n, c, rows * ph, cols * pw)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    p = patch_split(x, rows, cols)
    assert p.shape == (n * rows * cols, c, ph, pw)
    for i in range(n):
        for r in range(rows):
            for k in range(cols):
                want = x[i, :, r * ph:(r + 1) * ph, k * pw:(k + 1) * pw]
                assert torch.equal(p[(i * rows + r) * cols + k], want)  # row-major per image
    if channels_last and rows * cols > 1:
        assert p.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(patch_merge(p, rows, cols), x)


def test_quadrant_order_is_tl_tr_bl_br():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    p = patch_split(x, 2, 2)
    assert [t[0, 0, 0].item() for t in p] == [0.0, 2.0, 8.0, 10.0]


@pytest.mark.parametrize("fine,coarse", [((2, 2), (2, 1)), ((4, 2), (2, 2)), ((4, 2), (1, 1)), ((2, 1), (1, 1))])
def test_regroup_equals_merge_then_split(fine, coarse):
    x = torch.randn(2 * fine[0] * fine[1], 4, 3, 5)
    want = patch_split(patch_merge(x, *fine), *coarse)
    assert torch.equal(patch_regroup(x, fine, coarse), want)


def test_bad_grids_are_named():
    with pytest.raises(ValueError, match="does not split"):
        patch_split(torch.zeros(1, 1, 5, 4), 2, 2)
    with pytest.raises(ValueError, match="not a multiple"):
        patch_merge(torch.zeros(3, 1, 2, 2), 2, 1)
    with pytest.raises(ValueError, match="does not divide"):
        patch_regroup(torch.zeros(4, 1, 2, 2), (2, 2), (1, 2 * 2))
    with pytest.raises(ValueError, match="positive"):
        patch_split(torch.zeros(1, 1, 4, 4), 0, 1)
