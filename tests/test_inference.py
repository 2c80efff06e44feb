"""The codec's inference copy of a model (Tokenizer.prepare_inference) and flushed subnormals: faster, and
the same model as far as files are concerned."""

from __future__ import annotations

import copy

import pytest
import torch

from vqkit.models import Tokenizer, TokenizerConfig
from vqkit.validation import flushed_subnormals

SUBNORMAL = 1e-39  # below float32's smallest normal, 1.18e-38


def flushes() -> bool:
    """Whether this thread flushes subnormals now (a subnormal times one gives zero)."""
    return bool((torch.tensor([SUBNORMAL]) * 1.0).item() == 0.0)


def small_model() -> Tokenizer:
    torch.manual_seed(0)
    return Tokenizer(TokenizerConfig(arch="rfsq_conv", quantizer="fsq", conv_channels=(16, 32),
                                     quantizer_args={"levels": [8, 5, 5]}))


def test_flushed_subnormals_nests_and_restores() -> None:
    assert not flushes()
    with flushed_subnormals():
        assert flushes()
        with flushed_subnormals("cpu"):
            assert flushes()
        assert flushes()  # the inner context does not turn the outer one off
    assert not flushes()
    with pytest.raises(RuntimeError), flushed_subnormals():
        raise RuntimeError("restored on errors too")
    assert not flushes()
    torch.set_flush_denormal(True)  # a caller that flushed before keeps flushing after
    try:
        with flushed_subnormals():
            pass
        assert flushes()
    finally:
        torch.set_flush_denormal(False)


def test_flushed_subnormals_is_per_thread() -> None:
    """The CPU flag is per thread, and so is the count: a thread leaving its context turns its own flag off
    while another thread's context is still open."""
    import threading

    entered, leave, seen = threading.Event(), threading.Event(), {}

    def other() -> None:
        with flushed_subnormals():
            entered.set()
            leave.wait(10)
            seen["inside"] = flushes()
        seen["after"] = flushes()

    worker = threading.Thread(target=other)
    worker.start()
    entered.wait(10)
    with flushed_subnormals():
        assert flushes()
    assert not flushes()  # this thread's flag, although the other thread's context is open
    leave.set()
    worker.join(10)
    assert seen == {"inside": True, "after": False}


def test_prepare_inference_keeps_the_identity_and_the_outputs() -> None:
    model = small_model().eval()
    with torch.no_grad():
        model.decoder.blocks[2].weight[0, 0, 0, 0] = SUBNORMAL  # what weight decay leaves behind
    stored, x = copy.deepcopy(model), torch.rand(2, 3, 32, 32) * 2 - 1
    prepared = model.prepare_inference()
    assert prepared is model and not model.training
    assert model.identity() == stored.identity()  # files name the stored weights
    assert model.decoder.blocks[2].weight[0, 0, 0, 0].item() == 0.0
    assert not any(p.requires_grad for p in model.parameters())
    conv = model.encoder.blocks[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    tokens = stored.encode(x)
    assert (model.encode(x) == tokens).float().mean() > 0.99  # a token on a rounding boundary may flip
    torch.testing.assert_close(model.decode(tokens), stored.decode(tokens), rtol=1e-5, atol=1e-5)


def test_a_prepared_model_refuses_training_new_weights_and_saving(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Its id is the stored weights': anything that would pair that id with other weights is refused."""
    model = small_model().prepare_inference()
    with pytest.raises(RuntimeError, match="prepared for inference"):
        model.train()
    with pytest.raises(RuntimeError, match="prepared for inference"):
        model.load_state_dict(small_model().state_dict())
    with pytest.raises(RuntimeError, match="prepared for inference"):
        model.save_pretrained(tmp_path / "m")
    model.eval()  # eval mode stays allowed


def test_open_codec_prepares_its_copy_and_its_files_decode_with_the_stored_model() -> None:
    from vqkit.modalities import open_codec

    codec, _ = open_codec("default")
    stored = Tokenizer.from_pretrained("default")
    assert codec.model_id == type(codec)(stored, codec.adapter, codec.tables, codec.tile, codec.margin).model_id
    assert not any(p.requires_grad for p in codec.model.parameters())
