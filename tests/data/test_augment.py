"""Random crops and flips: what each pixel becomes, checked against a hand-made shift."""

import torch
import torch.nn.functional as F

from deepstrata.data.augment import random_crop, random_flip


def test_random_crop_is_a_shift_with_the_chosen_border():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    for mode in ("constant", "reflect"):
        g = torch.Generator().manual_seed(3)
        offsets = torch.randint(0, 5, (2, 2), generator=torch.Generator().manual_seed(3))
        out = random_crop(x, 2, g, mode=mode)
        padded = F.pad(x, (2, 2, 2, 2), mode=mode)
        for i in range(2):
            r, c = offsets[0, i], offsets[1, i]
            assert torch.equal(out[i], padded[i, :, r : r + 5, c : c + 5]), mode
    border = random_crop(torch.ones(64, 1, 4, 4), 1, torch.Generator().manual_seed(0), mode="reflect")
    assert torch.equal(border, torch.ones(64, 1, 4, 4))  # a mirrored border never brings in zeros
    zeros = random_crop(torch.ones(64, 1, 4, 4), 1, torch.Generator().manual_seed(0))
    assert (zeros == 0).any()


def test_a_process_share_gets_the_crops_of_the_whole_batch():
    x = torch.rand(8, 3, 6, 6)
    whole = random_crop(x, 2, torch.Generator().manual_seed(1), mode="reflect")
    part = random_crop(x[4:], 2, torch.Generator().manual_seed(1), total=8, part=slice(4, 8), mode="reflect")
    assert torch.equal(whole[4:], part)
    flipped = random_flip(x, torch.Generator().manual_seed(2))
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x))
