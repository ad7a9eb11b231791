"""Padding a batch to one of a few fixed sizes, so that a compiled model reuses its graphs."""

import torch


def bucket_size(n: int) -> int:
    """The size a count is padded to for a compiled model: the next power of two, so that any
    count reuses one of a few compiled graphs.

    Arguments:
      n (int): the count, >= 1.

    Returns:
      (int): the smallest power of two >= n.
    """
    return 1 << max(0, n - 1).bit_length()


def pad_to_bucket(tensor: torch.Tensor, dim: int, at_least: int = 1) -> torch.Tensor:
    """Pad a batch of images or prompts to a bucket size (`bucket_size`) by repeating its last
    entry (a real image or prompt, so that padding never feeds the model values it cannot
    take); the caller drops the padded entries' outputs.

    Arguments:
      tensor (torch.Tensor): the batch, with at least one entry along `dim`.
      dim (int): the dimension to pad.
      at_least (int): pad to the bucket size of this length, if more than the tensor's.

    Returns:
      (torch.Tensor): `tensor` padded along `dim` to `bucket_size` of its length (or of
        `at_least`); `tensor` itself when no padding is needed.
    """
    n = tensor.shape[dim]
    extra = bucket_size(max(n, at_least)) - n
    if extra == 0:
        return tensor
    last = tensor.narrow(dim, n - 1, 1)
    return torch.cat([tensor, last.expand(*[extra if d == dim % tensor.ndim else -1 for d in range(tensor.ndim)])],
                     dim=dim)
