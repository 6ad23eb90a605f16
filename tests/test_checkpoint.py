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


def edit_meta(checkpoint, edit) -> None:
    path = checkpoint.path / "meta.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps(edit(meta)))


META_DAMAGE = {
    "no rng": lambda meta: {k: v for k, v in meta.items() if k != "rng"},
    "optimizer null": lambda meta: {**meta, "optimizer": None},
    "a list": lambda meta: [meta],
    "step 999": lambda meta: {**meta, "step": 999},
    "step as text": lambda meta: {**meta, "step": "20"},
    "rng not text": lambda meta: {**meta, "rng": {"torch": 5}},
    "extra file listed": lambda meta: {**meta, "sha256": {**meta["sha256"], "../x": "0"}},
    "format from the future": lambda meta: {**meta, "format": 99},
}


@pytest.mark.parametrize("damage", sorted(META_DAMAGE))
def test_a_meta_that_breaks_its_schema_falls_back_like_file_damage(tmp_path, damage):
    model, optimizer = model_and_optimizer()
    save_checkpoint(tmp_path, 10, model, optimizer, {})
    edit_meta(save_checkpoint(tmp_path, 20, model, optimizer, {}), META_DAMAGE[damage])
    with pytest.warns(UserWarning, match="skipping checkpoint step-0000020: .*meta.json"):
        found = latest_valid_checkpoint(tmp_path, model, optimizer)
    assert found is not None and found.step == 10
    assert load_checkpoint(found, model, optimizer)["step"] == 10


@pytest.mark.parametrize("wrong", ["model", "optimizer"])
def test_tensors_of_the_wrong_shapes_are_found_before_loading(tmp_path, wrong):
    """Another model's weights: an error naming the tensor (resume keeps the architecture),
    never a fallback. Optimizer moments of the wrong shapes with a matching checksum: damage,
    skipped for the older checkpoint."""
    from safetensors.torch import load_file, save_file

    model, optimizer = model_and_optimizer()
    save_checkpoint(tmp_path, 10, model, optimizer, {})
    newest = save_checkpoint(tmp_path, 20, model, optimizer, {})
    if wrong == "model":
        wider = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
        with pytest.raises(CheckpointError, match=r"does not fit .*0\.weight: saved \(8, 4\)"):
            latest_valid_checkpoint(tmp_path, wider, torch.optim.AdamW(wider.parameters()))
        with pytest.raises(CheckpointError, match="architecture cannot change"):
            load_checkpoint(newest, wider)
        return
    path = newest.path / "optimizer.safetensors"
    tensors = load_file(str(path))
    name = next(name for name in tensors if name.endswith("exp_avg"))
    tensors[name] = torch.zeros(3, 3)
    save_file(tensors, str(path))
    edit_meta(newest, lambda meta: {**meta, "sha256": {**meta["sha256"], path.name: sha256(path)}})
    with pytest.warns(UserWarning, match=rf"skipping .*{name} has shape \(3, 3\)"):
        assert latest_valid_checkpoint(tmp_path, model, optimizer).step == 10


def test_staging_left_by_a_killed_save_is_removed_by_the_next(tmp_path):
    model, optimizer = model_and_optimizer()
    save_checkpoint(tmp_path, 10, model, optimizer, {})
    (tmp_path / ".step-0000020.abc123").mkdir()  # what kill -9 mid-save leaves
    (tmp_path / ".retired.xyz").mkdir()
    save_checkpoint(tmp_path, 20, model, optimizer, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000010", "step-0000020"]
