import numpy as np

from train.data.batching import MixedBatchSampler, collate
from train.data.config import PatchDatasetConfig
from train.data.dataset import CaseDataset, build_sample


def test_batch_contract(phantom_set, cases):
    config = PatchDatasetConfig(patch_size=(32, 32, 24), mask_fraction=0.5)
    ds = CaseDataset(cases, phantom_set / "cache", config)
    sampler = MixedBatchSampler(cases, batch_size=4, batches=3, mask_fraction=0.5, seed=3)
    for batch_items in sampler:
        batch = collate([ds[i] for i in batch_items])
        assert batch["has_mask"].sum().item() == 2
        t = batch["targets"]
        t.validate()
        assert batch["labels"].shape == (4, len(config.classes), 32, 32, 24)
        assert batch["unknown_mask"].shape == batch["labels"].shape and batch["image_hu"].shape == (4, 1, 32, 32, 24)
        lesion_c = [config.classes.index(n) for n in ("liver_lesion", "pancreas_lesion", "kidney_lesion")]
        for i in range(4):
            if batch["has_mask"][i]:
                assert t.group_state[i].eq(0).all() and not batch["unknown_mask"][i].any()
            else:
                assert not batch["labels"][i, lesion_c].any()  # report cases have no lesion labels
                for j in range(t.num_groups):
                    if t.group_state[i, j] == 1:  # a lesion group is unknown for the ordinary loss
                        assert batch["unknown_mask"][i, t.group_channel[i, j]][t.group_masks[i, j]].all()
        known = t.tumor_size_known
        assert (t.tumor_volume_mm3[known] > 0).all() and (t.tumor_group[known] >= 0).all()
        assert np.allclose(t.spacing_mm.numpy()[0], ds.cached(batch_items[0][0]).spacing_mm)


def test_collate_paints_what_build_sample_builds(phantom_set, cases):
    import torch

    config = PatchDatasetConfig(patch_size=(32, 32, 24), intensity_augmentation=False, unknown_margin_mm=7.0)
    ds = CaseDataset(cases, phantom_set / "cache", config)
    items = [(i, seed) for i in range(len(cases)) for seed in (5, 6)]
    batch = collate([ds[item] for item in items])
    t = batch["targets"]
    grown = 0
    for b, (index, seed) in enumerate(items):
        s = build_sample(ds.cached(index), cases[index], config, np.random.default_rng([seed, index]))
        for key in ("image", "image_hu", "labels", "unknown_mask"):
            assert np.array_equal(batch[key][b].numpy(), s[key]), key
        assert len(s["groups"]) == int((t.group_channel[b] >= 0).sum())
        for j, g in enumerate(s["groups"]):
            assert np.array_equal(t.group_masks[b, j].numpy(), g["mask"])
            assert (t.group_channel[b, j].item(), t.group_state[b, j].item()) == (g["channel"], g["state"])
        grown += any(0 < u.sum() < u.size for u in s["unknown_mask"])
    assert grown > 0  # some report crop had a grown (partial) unknown region
    assert batch["image"].dtype == torch.float32 and batch["labels"].dtype == torch.bool


def test_batch_is_sent_compact_and_rebuilt(phantom_set, cases):
    import pickle

    import torch

    from train.data.batching import BATCH_KEYS, Batch

    config = PatchDatasetConfig(patch_size=(32, 32, 24))
    ds = CaseDataset(cases, phantom_set / "cache", config)
    sampler = MixedBatchSampler(cases, batch_size=2, batches=2, mask_fraction=0.5, seed=9)
    expected = [collate([ds[i] for i in items]) for items in sampler]
    sampler.epoch = 0
    sent = pickle.dumps(collate([ds[i] for i in next(iter(sampler))]))
    dense = sum(expected[0][k].numel() * expected[0][k].element_size() for k in ("labels", "unknown_mask"))
    assert len(sent) < dense / 3
    sampler.epoch = 0
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=1)
    for got, want in zip(loader, expected):
        assert isinstance(got, Batch) and tuple(got) == BATCH_KEYS
        for key in ("image", "image_hu", "labels", "unknown_mask", "has_mask"):
            assert torch.equal(got[key], want[key]), key
        assert torch.equal(got["targets"].group_masks, want["targets"].group_masks)
        rebuilt = Batch(dict(got.items()))  # how DataLoader's pin_memory rebuilds a mapping
        assert rebuilt["labels"] is got["labels"]
