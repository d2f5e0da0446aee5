"""The Trainer's CUDA double buffering, checked on any machine with fake streams and events: which
waits happen per batch, and in what order (no GPU needed; the real thing runs in gpu_suite)."""
from __future__ import annotations

import contextlib
from typing import List, Tuple

import pytest
import torch

from fpac_async.agent.batch import Batch
from fpac_async.config import AgentConfig, ReplayConfig
from learner.trainer import Trainer

Log = List[Tuple]


class FakeEvent:
    count = 0

    def __init__(self, log: Log):
        FakeEvent.count += 1
        self.id, self.log = FakeEvent.count, log

    def record(self, stream: "FakeStream") -> None:
        self.log.append(("record", stream.name, self.id))

    def synchronize(self) -> None:  # a HOST wait
        self.log.append(("host_wait_event", self.id))


class FakeStream:
    def __init__(self, name: str, log: Log):
        self.name, self.log = name, log

    def wait_event(self, event: FakeEvent) -> None:  # a DEVICE-side wait
        self.log.append(("wait_event", self.name, event.id))

    def synchronize(self) -> None:
        self.log.append(("host_wait_stream", self.name))


class FakeReplay:
    num_valid = 100

    def __init__(self, log: Log):
        self.log, self.n = log, 0

    def sample(self, batch_size: int) -> Batch:
        self.n += 1
        self.log.append(("sample", self.n))
        t = torch.full((batch_size,), float(self.n))
        return Batch(obs=torch.zeros(batch_size, 6, 4, 4, dtype=torch.uint8),
                     action=t[:, None], reward=t, discount=t,
                     next_obs=torch.zeros(batch_size, 6, 4, 4, dtype=torch.uint8))


class FakeSAC:
    def __init__(self, log: Log):
        self.log = log

    def update(self, batch: Batch) -> dict:
        self.log.append(("update", int(batch.reward[0])))
        return {"critic_loss": batch.reward.mean()}

    def set_lr(self, lr: float) -> None:
        pass


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Log:
    log: Log = []
    compute = FakeStream("compute", log)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: FakeStream("side", log))
    monkeypatch.setattr(torch.cuda, "Event", lambda *a, **k: FakeEvent(log))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: compute)

    @contextlib.contextmanager
    def stream(s: FakeStream):
        log.append(("enter", s.name))
        yield
        log.append(("exit", s.name))

    monkeypatch.setattr(torch.cuda, "stream", stream)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, s: None)
    return log


def test_prefetch_has_no_host_wait_and_orders_copy_before_use(fake_cuda: Log) -> None:
    log = fake_cuda
    cfg = AgentConfig(batch_size=4)
    trainer = Trainer(FakeSAC(log), FakeReplay(log), cfg,
                      ReplayConfig(initial_random_steps=0, replay_ratio=1.0), batch_size=4,
                      device="cuda")
    trainer.device = torch.device("cpu")  # the fake batches stay on the CPU (no real copy)
    out = trainer.train(agent_steps=5, env_steps=0, max_updates=5)
    assert out is not None and out["updates_run"] == 5.0
    # 1. No host wait at all: the replay guards its staging buffers, the trainer never blocks.
    assert not [e for e in log if e[0].startswith("host_wait")], log
    # 2. Batch k is sampled and its event recorded on the side stream, then the compute stream
    #    waits for that event (on the device) before update k.
    pos = {e: i for i, e in enumerate(log)}
    recorded = [e for e in log if e[0] == "record"]
    assert [e[1] for e in recorded] == ["side"] * 6  # 5 used + 1 prefetched for the next call
    for k in range(1, 6):
        event = recorded[k - 1][2]
        assert pos[("sample", k)] < pos[("record", "side", event)] \
            < pos[("wait_event", "compute", event)] < pos[("update", k)]
    # 3. Overlap: batch k+1 is sampled after update k was issued (its copy runs beside it).
    for k in range(1, 5):
        assert pos[("update", k)] < pos[("sample", k + 1)] < pos[("update", k + 1)]
    # 4. The batch prefetched last is kept for the next call, not dropped.
    trainer.train(agent_steps=6, env_steps=0, max_updates=1)
    assert ("update", 6) in log and ("sample", 7) in log
