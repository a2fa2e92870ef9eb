"""Provenance is part of the loaded model and is found again through DDP, torch.compile and PEFT wrappers."""

from __future__ import annotations

import copy
import json
import pickle
import socket
from pathlib import Path

import pytest
import torch

from vggtctl.services.model_loader import Provenance, load_model, provenance_of


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> torch.nn.Module:
    return load_model(tiny_checkpoint)


def test_declared_on_the_model_not_in_its_state(model: torch.nn.Module, tiny_checkpoint: Path) -> None:
    prov = provenance_of(model)
    assert isinstance(prov, Provenance) and prov is model.provenance
    assert prov.path == str(tiny_checkpoint.resolve()) and len(prov.sha256) == 64
    assert not any("provenance" in k for k in model.state_dict())
    d = json.loads(json.dumps(prov.to_dict()))
    assert d["base"] is None and d["adapter"] is None and d["quantization"] is None
    assert provenance_of(copy.deepcopy(model)) == prov
    assert provenance_of(pickle.loads(pickle.dumps(model))) == prov  # DataLoader workers, spawn
    assert provenance_of(torch.nn.Linear(2, 2)) is None


def test_through_ddp_on_gloo(model: torch.nn.Module) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(copy.deepcopy(model))
        assert not hasattr(ddp, "provenance")  # the wrapper hides plain attributes: why provenance_of exists
        assert provenance_of(ddp) == model.provenance
    finally:
        dist.destroy_process_group()


def test_through_torch_compile_wrapper(model: torch.nn.Module) -> None:
    compiled = torch.compile(model)  # wrapping only: nothing is compiled until it is called
    assert type(compiled).__name__ == "OptimizedModule"
    assert provenance_of(compiled) is model.provenance


def test_through_peft_lora(model: torch.nn.Module) -> None:
    peft = pytest.importorskip("peft")  # the dev extra installs it
    lora = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=2, target_modules=["qkv"]))
    assert type(lora).__name__ == "PeftModel"
    assert provenance_of(lora) == model.provenance
    assert provenance_of(torch.compile(lora)) == model.provenance
