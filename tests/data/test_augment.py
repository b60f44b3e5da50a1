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


def test_a_resized_crop_on_whole_pixels_is_that_crop_resized():
    from deepstrata.data.augment import resized_crop

    x = torch.rand(3, 2, 12, 16)
    full = resized_crop(x, torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3))
    assert torch.allclose(full, x, atol=1e-5)
    # left 4 px, top 3 px, 8 x 6 px of a 16 x 12 picture: the hand-made crop, enlarged by F.interpolate
    # (the outermost output pixels differ: they blend the pixel beyond the box where interpolate clamps)
    box = torch.tensor([[4 / 16, 3 / 12, 8 / 16, 6 / 12]] * 3)
    want = F.interpolate(x[:, :, 3:9, 4:12], size=(12, 16), mode="bilinear", align_corners=False)
    got = resized_crop(x, box)
    assert torch.allclose(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], atol=1e-5)
    assert not torch.allclose(got[..., 0, :], want[..., 0, :], atol=1e-3)


def test_random_resized_crops_keep_their_scale_and_aspect_and_split_across_processes():
    from deepstrata.data.augment import RESIZED_SCALE, random_resized_crop

    x = torch.rand(8, 3, 10, 10)
    whole = random_resized_crop(x, torch.Generator().manual_seed(4))
    part = random_resized_crop(x[4:], torch.Generator().manual_seed(4), total=8, part=slice(4, 8))
    assert whole.shape == x.shape and torch.allclose(whole[4:], part)
    assert not torch.allclose(whole, x)
    # a constant image stays constant (no border, no zeros brought in) whatever the boxes
    assert torch.allclose(random_resized_crop(torch.ones(64, 1, 8, 8), torch.Generator().manual_seed(0)),
                          torch.ones(64, 1, 8, 8))
    # the boxes drawn: area within the scale range (before clamping to the image), inside the picture
    import deepstrata.data.augment as augment

    seen = []
    original = augment.resized_crop
    augment.resized_crop = lambda images, boxes: seen.append(boxes) or original(images, boxes)
    try:
        random_resized_crop(torch.rand(2000, 1, 4, 4), torch.Generator().manual_seed(5))
    finally:
        augment.resized_crop = original
    left, top, w, h = seen[0].unbind(1)
    assert (left >= 0).all() and (top >= 0).all() and (left + w <= 1 + 1e-6).all() and (top + h <= 1 + 1e-6).all()
    assert (w * h <= RESIZED_SCALE[1] + 1e-6).all() and (w * h).min() < RESIZED_SCALE[0] + 0.05
