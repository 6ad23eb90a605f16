"""Checkpoints: exact round trip, atomic layout, corruption detected, pickles refused."""

from __future__ import annotations

import base64
import json
import pickle

import pytest
import torch

from iclab.training.checkpoint import (
    CheckpointError,
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_tensors,
    restore_rng_state,
    save_checkpoint,
    sha256,
)


def model_and_optimizer(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = model(torch.randn(16, 4)).pow(2).mean()
    loss.backward()
    optimizer.step()
    return model, optimizer


def test_round_trip_restores_weights_and_optimizer_state_exactly(tmp_path):
    model, optimizer = model_and_optimizer(0)
    checkpoint = save_checkpoint(tmp_path, 5, model, optimizer, {"note": "x"})
    fresh_model, fresh_optimizer = model_and_optimizer(1)
    meta = load_checkpoint(checkpoint, fresh_model, fresh_optimizer)
    assert meta["step"] == 5 and meta["note"] == "x"
    for saved, loaded in zip(
        model.state_dict().values(), fresh_model.state_dict().values(), strict=True
    ):
        assert torch.equal(saved, loaded)
    saved_state, loaded_state = optimizer.state_dict(), fresh_optimizer.state_dict()
    for index, entries in saved_state["state"].items():
        for key, value in entries.items():
            assert torch.equal(value, loaded_state["state"][index][key])
    assert saved_state["param_groups"][0]["lr"] == loaded_state["param_groups"][0]["lr"]


def test_checkpoint_holds_only_safetensors_and_json_with_checksums(tmp_path):
    model, optimizer = model_and_optimizer()
    checkpoint = save_checkpoint(tmp_path, 3, model, optimizer, {})
    assert sorted(p.name for p in checkpoint.path.iterdir()) == [
        "meta.json",
        "model.safetensors",
        "optimizer.safetensors",
    ]
    meta = json.loads((checkpoint.path / "meta.json").read_text())
    assert meta["sha256"]["model.safetensors"] == sha256(checkpoint.path / "model.safetensors")
    assert checkpoint.path.name == "step-0000003"
    assert [p.name for p in tmp_path.iterdir()] == ["step-0000003"]  # no staging left behind


def test_the_saved_random_state_replays_the_draws_that_followed_the_save(tmp_path):
    """meta.json's "rng" is the generator's state at the save, bytes for bytes (read here with
    base64 alone), and restoring it replays dropout's draws after a resume."""
    model, optimizer = model_and_optimizer()
    torch.manual_seed(7)
    torch.rand(3)  # a state other than a fresh seed's
    state_at_save = torch.get_rng_state()
    checkpoint = save_checkpoint(tmp_path, 1, model, optimizer, {})
    draws_after_save = torch.rand(1000)
    saved = base64.b64decode(checkpoint.meta["rng"]["torch"])
    assert torch.equal(torch.frombuffer(bytearray(saved), dtype=torch.uint8), state_at_save)
    torch.manual_seed(8)
    restore_rng_state(checkpoint.meta["rng"])
    assert torch.equal(torch.rand(1000), draws_after_save)


def test_only_the_newest_k_are_kept(tmp_path):
    model, optimizer = model_and_optimizer()
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, model, optimizer, {}, keep=2)
    assert [c.step for c in list_checkpoints(tmp_path)] == [30, 40]


def test_resaving_a_step_replaces_it(tmp_path):
    model, optimizer = model_and_optimizer()
    save_checkpoint(tmp_path, 10, model, optimizer, {"version": 1})
    checkpoint = save_checkpoint(tmp_path, 10, model, optimizer, {"version": 2})
    assert checkpoint.meta["version"] == 2 and len(list_checkpoints(tmp_path)) == 1


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete_meta", "delete_model"])
def test_damaged_newest_checkpoint_is_skipped_with_a_warning(tmp_path, damage):
    model, optimizer = model_and_optimizer()
    save_checkpoint(tmp_path, 10, model, optimizer, {})
    newest = save_checkpoint(tmp_path, 20, model, optimizer, {})
    weights = newest.path / "model.safetensors"
    if damage == "flip_byte":
        data = bytearray(weights.read_bytes())
        data[-5] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "delete_meta":
        (newest.path / "meta.json").unlink()
    else:
        weights.unlink()
    with pytest.warns(UserWarning, match="skipping checkpoint step-0000020"):
        found = latest_valid_checkpoint(tmp_path)
    assert found is not None and found.step == 10


def test_interrupted_save_leaves_no_checkpoint(tmp_path, monkeypatch):
    model, optimizer = model_and_optimizer()
    save_checkpoint(tmp_path, 10, model, optimizer, {})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("iclab.training.checkpoint.fsync_directory", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 20, model, optimizer, {})
    assert [c.step for c in list_checkpoints(tmp_path)] == [10]
    assert [p.name for p in tmp_path.iterdir()] == ["step-0000010"]


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_pickle_is_refused_even_with_a_matching_checksum(tmp_path, writer):
    model, optimizer = model_and_optimizer()
    checkpoint = save_checkpoint(tmp_path, 10, model, optimizer, {})
    weights = checkpoint.path / "model.safetensors"
    if writer == "pickle":
        weights.write_bytes(pickle.dumps(model.state_dict()))
    else:
        torch.save(model.state_dict(), weights)
    meta_path = checkpoint.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["sha256"]["model.safetensors"] = sha256(weights)  # an attacker can fix checksums too
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_tensors(weights)
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(checkpoint, model)
    with pytest.warns(UserWarning, match="never unpickles"):
        assert latest_valid_checkpoint(tmp_path) is None


@pytest.mark.parametrize("first_byte", [0x80, 0x50])  # a pickle's and a zip's first byte
def test_a_safetensors_header_length_starting_like_a_pickle_still_loads(tmp_path, first_byte):
    from safetensors.torch import save_file

    path = tmp_path / "t.safetensors"
    for length in range(1, 400):  # pad a tensor name until the header length's low byte fits
        tensors = {"w" * length: torch.arange(3.0)}
        save_file(tensors, str(path))
        if path.read_bytes()[0] == first_byte:
            break
    assert path.read_bytes()[0] == first_byte
    assert torch.equal(read_tensors(path)["w" * length], torch.arange(3.0))
