"""One check every fast attention path passes against the reference: outputs, then input gradients."""

import torch


def assert_same_outputs_and_grads(fast, ref, fast_in, ref_in, atol=1e-5):
    """``fast``/``ref``: outputs computed from the leaf tensors ``fast_in``/``ref_in`` (same values)."""
    torch.testing.assert_close(fast, ref, atol=atol, rtol=atol)
    grad = torch.randn_like(fast)
    fast.backward(grad)
    ref.backward(grad)
    for name in fast_in:
        torch.testing.assert_close(fast_in[name].grad, ref_in[name].grad, atol=atol, rtol=atol, msg=name)
