"""The runtime: device and precision by capability, memory formats, and the one inference pass."""

from __future__ import annotations

import pytest
import torch

from mmtool.config import EncoderConfig, ModelConfig, TrainConfig
from mmtool.data import Batch, Split
from mmtool.engine.inference import run_inference
from mmtool.engine.runtime import Runtime, bf16_is_fast, resolve_device, resolve_precision
from mmtool.errors import UserError
from mmtool.models import build_model, model_spec

CPU = torch.device("cpu")


def test_fp16_needs_cuda_and_cuda_must_exist():
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(UserError, match="CUDA is not available"):
            Runtime.from_config(TrainConfig(device="cuda:0"))
    with pytest.raises(UserError, match="not a device"):
        resolve_device("gpu")


@pytest.mark.parametrize(("amx", "expected"), [("1", "bf16"), ("0", "fp32")])
def test_auto_precision_follows_the_cpu_capability(monkeypatch, amx, expected):
    """bf16 only where it is native: on a CPU without AMX it is emulated and several times slower."""
    monkeypatch.setenv("MMTOOL_CPU_AMX", amx)
    assert bf16_is_fast(CPU) == (amx == "1")
    assert Runtime.from_config(TrainConfig(device="cpu", precision="auto")).precision == expected
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"


def test_describe_names_device_and_precision(monkeypatch):
    monkeypatch.setenv("MMTOOL_CPU_AMX", "0")
    info = Runtime.from_config(TrainConfig(device="cpu", precision="auto")).describe()
    assert info["device"] == "cpu" and info["precision"] == "fp32" and info["cpu_amx"] is False


def test_one_process_runtime_has_no_ranks_and_collectives_are_identities(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    runtime = Runtime.from_config(TrainConfig(device="cpu", sync_batchnorm=True))
    assert (runtime.rank, runtime.world_size, runtime.is_main, runtime.distributed) == (0, 1, True, False)
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    assert runtime.wrap(model) is model and runtime.convert_sync_batchnorm(model) is model
    assert runtime.broadcast_object("x") == "x" and runtime.gather_objects(3) == [3]
    assert runtime.any_rank(True) and not runtime.any_rank(False)
    assert runtime.local_batch_size(64) == 64


def test_the_global_batch_is_split_evenly_over_the_ranks():
    runtime = Runtime(CPU, rank=1, world_size=4)
    assert runtime.local_batch_size(64) == 16 and runtime.local_batch_size(0) == 0
    with pytest.raises(UserError, match="train.batch_size=30 is the global batch and must divide evenly over 4"):
        runtime.local_batch_size(30)


def test_torchrun_environment_is_read_and_checked(monkeypatch):
    from mmtool.engine.runtime import launch_env

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert launch_env() == (2, 4, 0)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UserError, match="RANK=4 is not a rank of WORLD_SIZE=4"):
        launch_env()
    monkeypatch.setenv("RANK", "1")
    # SyncBatchNorm is CUDA-only in torch: asking for it on CPU ranks is refused before joining any group
    with pytest.raises(UserError, match="sync_batchnorm needs CUDA"):
        Runtime.from_config(TrainConfig(device="cpu", sync_batchnorm=True))


def test_channels_last_converts_images_and_clips_alike():
    """4-D weights and inputs become channels_last, 5-D (video) ones channels_last_3d; the forward of a
    video + spectrogram model then runs and matches the contiguous model."""
    cfg = ModelConfig(encoders={"video": EncoderConfig(name="r3d18"), "image": EncoderConfig(name="resnet18")})
    spec = model_spec(cfg, {"video": [3, 4, 16, 16], "image": [1, 16, 16]}, 3, ["video", "image"])
    torch.manual_seed(0)
    plain, fast = build_model(spec).eval(), build_model(spec).eval()
    fast.load_state_dict(plain.state_dict())
    runtime = Runtime(CPU, channels_last=True)
    runtime.prepare_model(fast)
    assert fast.encoders["video"].stem[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert fast.encoders["image"].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    batch = Batch({"video": torch.randn(2, 3, 4, 16, 16), "image": torch.randn(2, 1, 16, 16)}, torch.tensor([0, 1]))
    moved = runtime.to_device(batch)
    assert moved.inputs["video"].is_contiguous(memory_format=torch.channels_last_3d)
    assert moved.inputs["image"].is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(fast(moved.inputs)["logits"], plain(batch.inputs)["logits"], rtol=1e-4, atol=1e-4)


class _Reversed:
    """A split source that yields its samples in reverse order and small batches (as a sharded or
    shuffled reader might): inference must still return them in sample order."""

    modalities = ("m1",)
    eval_batch_size = 3

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def targets(self) -> torch.Tensor:
        return self.y

    def select(self, modalities):
        return self

    def loader(self, batch_size, *, train, seed=0, epoch=1, workers=0, shard=None, pin_memory=False):
        order = torch.arange(len(self.y)).flip(0)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield Batch({"m1": self.x[idx]}, self.y[idx], idx)


def test_inference_returns_sample_order_and_what_was_asked(make_model):
    model, _ = make_model(modalities=("m1",), head="ensemble", dims={"m1": 5})
    x, y = torch.randn(10, 5), torch.randint(0, 2, (10,))
    out = run_inference(model, _Reversed(x, y), Runtime.cpu(), want=("logits",))
    assert set(out) == {"logits", "target", "ids"}
    assert torch.equal(out["ids"], torch.arange(10)) and torch.equal(out["target"], y)
    with torch.no_grad():
        torch.testing.assert_close(out["logits"], model({"m1": x})["logits"])
    doubled = run_inference(model, Split({"m1": x}, y), Runtime.cpu(),
                            forward=lambda net, inp: {"twice": 2 * inp["m1"]}, want=("twice",))  # fmt: skip
    torch.testing.assert_close(doubled["twice"], 2 * x)
