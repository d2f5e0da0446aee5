"""Replay: stacks rebuilt per stream, episode starts, gaps, wrap-around, threads, checkpoints.

Every record's pixels encode its global record number g (channel 0 = g % 256, channel 1 = g // 256)
and its stream (channel 2), and its action/reward/cam/state encode g too, so every sampled row can
be traced back to the exact records it was built from and checked against a slow reference model.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from learner.replay import Replay

F, TM, TR = 1, 2, 4  # FIRST, TERMINAL, TRUNCATED
HW = 4


class Feeder:
    """Builds chunks whose contents encode the global record number, and a reference model."""

    def __init__(self, state_dim: int = 0) -> None:
        self.g = 0
        self.state_dim = state_dim
        self.log: list[tuple[tuple[int, int], int, int, int]] = []  # (stream, step, flags, g)

    def chunk(self, stream: tuple[int, int], step0: int, flags: list[int]) -> dict:
        t = len(flags)
        gs = np.arange(self.g, self.g + t)
        obs = np.zeros((t, 3, HW, HW), np.uint8)
        obs[:, 0], obs[:, 1] = (gs % 256)[:, None, None], (gs // 256)[:, None, None]
        obs[:, 2] = stream[0] * 8 + stream[1]
        for k, g in enumerate(gs):
            self.log.append((stream, step0 + k, flags[k], int(g)))
        self.g += t
        out = dict(stream=stream, step0=step0, obs=obs,
                   action=np.stack([gs, -gs], 1).astype(np.float32),
                   reward=(gs + 0.5).astype(np.float32), flags=np.asarray(flags, np.uint8),
                   version=gs.astype(np.int32), cam=np.stack([gs, gs * 2], 1).astype(np.float32))
        if self.state_dim:
            out["state"] = np.stack([gs * (k + 1) for k in range(self.state_dim)], 1).astype(np.float32)
        return out

    def expected(self, capacity: int, stack: int) -> dict[int, tuple]:
        """g -> (obs frame gs, next_obs frame gs, discount) of every valid transition (slowly)."""
        oldest = max(0, self.g - capacity)
        per_stream: dict = {}
        for stream, step, flags, g in self.log:
            per_stream.setdefault(stream, []).append((step, flags, g))
        out = {}
        for recs in per_stream.values():
            for p in range(len(recs) - 1):
                (step, _, g), (nstep, nflags, ng) = recs[p], recs[p + 1]
                if nstep != step + 1 or nflags & F:
                    continue
                frames, q = [g], p
                while len(frames) < stack:
                    if recs[q][1] & F:
                        frames.insert(0, recs[q][2])
                    elif q > 0 and recs[q - 1][0] == recs[q][0] - 1:
                        q -= 1
                        frames.insert(0, recs[q][2])
                    else:
                        break
                if len(frames) < stack or min(frames) < oldest:
                    continue
                out[g] = (tuple(frames), tuple(frames[1:] + [ng]), 0.0 if nflags & TM else 1.0)
        return out


def frame_ids(stacked: torch.Tensor) -> np.ndarray:
    """[B, 3S, H, W] -> [B, S] global record numbers of the frames (pixel (0, 0))."""
    px = stacked[:, :, 0, 0].cpu().numpy().astype(np.int64).reshape(len(stacked), -1, 3)
    return px[:, :, 0] + 256 * px[:, :, 1]


def check_batch(batch, expected: dict, state_dim: int = 0) -> set[int]:
    """Every row is exactly a transition of the reference; returns the g of the rows."""
    batch.validate(check_overlap=True)
    obs, nxt = frame_ids(batch.obs), frame_ids(batch.next_obs)
    seen = set()
    for row in range(len(obs)):
        g = int(obs[row, -1])
        assert g in expected, f"sampled an invalid transition at record {g}"
        e_obs, e_next, e_disc = expected[g]
        assert tuple(obs[row]) == e_obs and tuple(nxt[row]) == e_next
        ng = e_next[-1]
        assert batch.action[row].tolist() == [ng, -ng]
        assert batch.reward[row].item() == ng + 0.5
        assert batch.discount[row].item() == e_disc
        assert batch.cam[row].tolist() == [g, 2 * g] and batch.next_cam[row].tolist() == [ng, 2 * ng]
        if state_dim:
            assert batch.state[row].tolist() == [g * (k + 1) for k in range(state_dim)]
            assert batch.next_state[row].tolist() == [ng * (k + 1) for k in range(state_dim)]
        seen.add(g)
    return seen


def make(capacity: int = 64, stack: int = 2, state_dim: int = 0, seed: int = 0,
         device: str | torch.device = "cpu") -> Replay:
    return Replay(capacity, (3, HW, HW), 2, frame_stack=stack, state_dim=state_dim, seed=seed,
                  batch_size=64, device=device)


def test_episode_boundaries_terminal_and_truncation_by_hand(device):
    r, fd = make(device=device), Feeder()
    # records: 0 F, 1, 2, 3, 4 TERMINAL, 5 F, 6, 7 TRUNCATED, 8 F, 9
    r.add(**fd.chunk((0, 0), 0, [F, 0, 0, 0, TM, F, 0, TR, F, 0]))
    want = {0: ((0, 0), (0, 1), 1.0), 1: ((0, 1), (1, 2), 1.0), 2: ((1, 2), (2, 3), 1.0),
            3: ((2, 3), (3, 4), 0.0),  # terminal next: no bootstrap
            5: ((5, 5), (5, 6), 1.0),  # FIRST frame repeated at the episode start
            6: ((5, 6), (6, 7), 1.0),  # truncated next: bootstrap
            8: ((8, 8), (8, 9), 1.0)}
    assert want == fd.expected(64, 2)
    assert len(r) == 10 and r.num_valid == len(want)
    seen = set()
    for _ in range(5):
        seen |= check_batch(r.sample(64), want)
    assert seen == set(want)  # 4 (next is FIRST), 7 (next is FIRST), 9 (no next) never sampled


def test_interleaved_streams_and_chunking_never_mix_frames():
    r, fd = make(capacity=256, state_dim=3), Feeder(state_dim=3)
    rng = np.random.default_rng(1)
    steps = {(0, 0): 0, (0, 1): 0, (3, 0): 0}
    for _ in range(40):
        s = list(steps)[rng.integers(3)]
        n = int(rng.integers(1, 5))
        flags = [F if steps[s] == 0 and k == 0 else int(rng.choice([0, 0, 0, 0, TM, TR]))
                 for k in range(n)]
        flags = [F if k > 0 and flags[k - 1] & (TM | TR) else f for k, f in enumerate(flags)]
        r.add(**fd.chunk(s, steps[s], flags))
        steps[s] += n
    want = fd.expected(256, 2)
    assert r.num_valid == len(want) > 20
    for _ in range(4):
        check_batch(r.sample(64), want, state_dim=3)


def test_wrap_around_invalidates_exactly_what_was_overwritten(device):
    rng = np.random.default_rng(2)
    for stack in (2, 3):
        r, fd = make(capacity=13, stack=stack, device=device), Feeder()
        steps = {(0, 0): 0, (1, 0): 0}
        for i in range(60):
            s = list(steps)[rng.integers(2)]
            n = int(rng.integers(1, 4))
            flags = [F if steps[s] % 7 == 0 and k == 0 else 0 for k in range(n)]
            r.add(**fd.chunk(s, steps[s], flags))
            steps[s] += n
            want = fd.expected(13, stack)
            assert len(r) == min(fd.g, 13) and r.num_valid == len(want), (stack, i)
            if want:
                seen = check_batch(r.sample(32), want)
                assert min(seen) >= fd.g - 13


def test_gap_starts_a_segment_whose_earlier_frames_are_unknown():
    r, fd = make(), Feeder()
    r.add(**fd.chunk((0, 0), 0, [F, 0, 0]))  # g 0..2
    r.add(**fd.chunk((0, 0), 7, [0, 0, 0]))  # g 3..5: steps 3..6 were lost
    want = {0: ((0, 0), (0, 1), 1.0), 1: ((0, 1), (1, 2), 1.0),
            4: ((3, 4), (4, 5), 1.0)}  # 2: no next across the gap; 3: its older frame is unknown
    assert fd.expected(64, 2) == want and r.num_valid == 3
    assert check_batch(r.sample(64), want) == set(want)
    r.add(**fd.chunk((0, 0), 0, [F, 0]))  # actor restart: step0 goes back to 0 with a FIRST
    want[6] = ((6, 6), (6, 7), 1.0)
    assert r.num_valid == 4 and check_batch(r.sample(64), want) == set(want)


def test_one_big_add_equals_chunked_adds():
    big, chunked, fd = make(capacity=24), make(capacity=24), Feeder()
    flags = [F] + [0] * 9 + [TR, F] + [0] * 11
    data = fd.chunk((2, 1), 0, flags)
    big.add(**data)
    for a, b in ((0, 3), (3, 4), (4, 11), (11, 23)):
        part = {k: (v[a:b] if isinstance(v, np.ndarray) else v) for k, v in data.items()}
        chunked.add(**{**part, "step0": a})
    assert len(big) == len(chunked) == 23 and big.num_valid == chunked.num_valid
    x, y = big.sample(64), chunked.sample(64)
    assert torch.equal(x.obs, y.obs) and torch.equal(x.next_obs, y.next_obs)
    check_batch(x, fd.expected(24, 2))


def test_validation_errors_name_the_problem():
    r, fd = make(state_dim=2), Feeder(state_dim=2)
    good = fd.chunk((0, 0), 0, [F, 0])
    bad = [({"obs": good["obs"].astype(np.float32)}, "obs must be uint8"),
           ({"obs": good["obs"][:, :, :2]}, "obs must have shape"),
           ({"action": good["action"][:, :1]}, "action must have shape"),
           ({"reward": good["reward"].astype(np.float64)}, "reward must be float32"),
           ({"flags": np.array([F, 8], np.uint8)}, "flags may only"),
           ({"state": None}, "state f32"),
           ({"cam": good["cam"][:1]}, "cam must have shape"),
           ({"step0": -1}, "step0"),
           ({"version": good["version"].astype(np.int64)}, "version must be int32")]
    for change, msg in bad:
        with pytest.raises(ValueError, match=msg):
            r.add(**{**good, **change})
    with pytest.raises(ValueError, match="1..capacity"):
        make(capacity=4).add(**Feeder().chunk((0, 0), 0, [0] * 5))
    with pytest.raises(RuntimeError, match="no valid transitions"):
        r.sample(4)
    r.add(**good)
    with pytest.raises(ValueError, match="staging size"):
        r.sample(65)
    with pytest.raises(ValueError, match="frame_shape"):
        Replay(8, (4, 4, 4), 2)


def test_seeded_sampling_is_deterministic():
    fd = Feeder()
    data = fd.chunk((0, 0), 0, [F] + [0] * 30)
    a, b, c = make(seed=5), make(seed=5), make(seed=6)
    for r in (a, b, c):
        r.add(**data)
    x, y, z = a.sample(16), b.sample(16), c.sample(16)
    assert torch.equal(x.obs, y.obs) and torch.equal(x.action, y.action)
    assert not torch.equal(x.obs, z.obs)


def test_state_dict_round_trip_continues_identically():
    fd = Feeder(state_dim=1)
    r = make(capacity=16, stack=3, state_dim=1, seed=3)
    for i in range(8):
        r.add(**fd.chunk((0, i % 2), 3 * (i // 2), [F if i < 2 else 0, 0, 0]))
    copy = make(capacity=16, stack=3, state_dim=1)
    copy.load_state_dict(r.state_dict())
    assert len(copy) == len(r) and copy.num_valid == r.num_valid
    nxt = fd.chunk((0, 1), 12, [0, 0, TM, F])  # the streams continue after the restore
    r.add(**nxt)
    copy.add(**nxt)
    x, y = r.sample(64), copy.sample(64)
    assert torch.equal(x.obs, y.obs) and torch.equal(x.next_obs, y.next_obs)
    assert torch.equal(x.state, y.state) and torch.equal(x.discount, y.discount)
    check_batch(y, fd.expected(16, 3), state_dim=1)
    with pytest.raises(ValueError, match="capacity"):
        make(capacity=17, stack=3, state_dim=1).load_state_dict(r.state_dict())


def test_frame_stack_3_by_hand():
    r, fd = make(stack=3), Feeder()
    r.add(**fd.chunk((0, 0), 0, [F, 0, 0, 0]))
    want = {0: ((0, 0, 0), (0, 0, 1), 1.0), 1: ((0, 0, 1), (0, 1, 2), 1.0),
            2: ((0, 1, 2), (1, 2, 3), 1.0)}
    assert fd.expected(64, 3) == want
    assert check_batch(r.sample(64), want) == set(want)
    assert r.sample(8).obs.shape == (8, 9, HW, HW)


def test_memory_is_fixed_and_described():
    r = Replay(1000, (3, 84, 84), 6, batch_size=128)
    before = r.nbytes
    assert before >= 1000 * 3 * 84 * 84
    r.add(stream=(0, 0), step0=0, obs=np.zeros((5, 3, 84, 84), np.uint8),
          action=np.zeros((5, 6), np.float32), reward=np.zeros(5, np.float32),
          flags=np.array([F, 0, 0, 0, 0], np.uint8))
    assert r.nbytes == before and r.sample(128).obs.shape == (128, 6, 84, 84)
    assert "replay: 1000 transitions x 3x84x84 uint8 = 21.2 MB host memory" in r.describe()


def test_concurrent_add_and_sample_rows_are_consistent(device):
    r, fd = make(capacity=24, device=device), Feeder()
    chunks = [fd.chunk((0, k % 3), 4 * (k // 3), [F if k < 3 else 0, 0, 0, 0]) for k in range(300)]
    r.add(**chunks[0])
    stop = threading.Event()

    def receiver() -> None:
        for c in chunks[1:]:
            r.add(**c)
        stop.set()

    th = threading.Thread(target=receiver)
    th.start()
    rows = 0
    while not stop.is_set() or rows == 0:
        b = r.sample(16)
        obs, nxt = frame_ids(b.obs), frame_ids(b.next_obs)
        streams = b.obs[:, 2::3, 0, 0]
        assert torch.all(streams == streams[:, :1]) and np.all(nxt[:, 0] == obs[:, 1])
        assert np.all(b.action[:, 0].cpu().numpy() == nxt[:, 1])
        rows += 16
    th.join()


def test_overwrite_during_gather_is_detected_and_resampled():
    r, fd = make(capacity=10), Feeder()
    r.add(**fd.chunk((0, 0), 0, [F] + [0] * 9))
    gather, calls = r._gather, []

    def gather_while_receiver_overwrites(slots, idx):
        out = gather(slots, idx)
        if not calls:  # a receiver thread overwrites 8 of the 10 slots in the middle of the read
            r.add(**fd.chunk((0, 0), 10, [0] * 8))
        calls.append(len(slots))
        return out

    r._gather = gather_while_receiver_overwrites
    b = r.sample(32)
    assert calls == [32, 32]  # read, found torn, read again under the lock
    assert min(check_batch(b, fd.expected(10, 2))) >= 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("on_gpu", [False, True])
def test_cuda_sampling_with_pinned_staging(on_gpu):
    r = Replay(64, (3, HW, HW), 2, state_dim=2, device="cuda", on_gpu=on_gpu, batch_size=64)
    assert r.pinned and ("GPU memory" if on_gpu else "pinned host memory") in r.describe()
    fd = Feeder(state_dim=2)
    r.add(**fd.chunk((0, 0), 0, [F] + [0] * 20 + [TM, F, 0, 0]))
    want = fd.expected(64, 2)
    for _ in range(4):  # more than the two staging buffers
        b = r.sample(64)
        assert b.obs.device.type == "cuda" and b.state.device.type == "cuda"
        torch.cuda.synchronize()
        check_batch(b, want, state_dim=2)
