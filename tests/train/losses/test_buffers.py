import torch

from train.losses.buffers import new_tensor


def test_new_tensor_shapes_dtypes_and_zeros():
    for dtype in (torch.float32, torch.float64, torch.bool, torch.int64, torch.bfloat16):
        for shape in ((3, 4), (2, 8, 64, 64, 64)):  # heap-sized, and large enough for NumPy memory
            zero = new_tensor(shape, dtype, "cpu", zero=True)
            assert zero.shape == shape and zero.dtype == dtype and zero.is_contiguous()
            assert not zero.any()
            empty = new_tensor(shape, dtype, "cpu")
            assert empty.shape == shape and empty.dtype == dtype
    big = new_tensor((2, 8, 64, 64, 64), torch.float32, "cpu", zero=True)
    big[1, 3] = 2.0  # writable, and usable as an autograd gradient
    assert big.sum().item() == 2.0 * 64**3
