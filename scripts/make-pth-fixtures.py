#!/usr/bin/env python3
"""Writes fixtures/pth/: files laid out as torch.save writes them, without torch.

- `checkpoint.pth.tar`: a training checkpoint as the DGMS authors' loop saves
  it ({'epoch', 'state_dict', 'best_top1', 'optimizer', ...}), pickle
  protocol 2 (torch.save's default), every storage a stored zip entry
  `archive/data/<key>`, the pickle `archive/data.pkl`. The state dict holds
  mixture tensors named like the authors' (`...sub_distribution.mu`).
- `shared_storage.pth` (hostile): 200 tensors all views of one 4 KB
  storage, so reading them would take 200 times the storage.
- `nested.p<N>.pkl` for N = 0..5: one nested checkpoint-like value
  pickled at every protocol, to show the pre-scan accepts each.

Run from the repository root: python3 scripts/make-pth-fixtures.py
"""
import collections
import io
import pickle
import struct
import sys
import types
import zipfile

# Stand-ins for the torch names the pickle refers to (GLOBAL opcodes).
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


class FloatStorage:
    pass


FloatStorage.__module__ = "torch"
torch.FloatStorage = FloatStorage


def _rebuild_tensor_v2(*args):
    raise NotImplementedError


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class Tensor:
    """A float32 tensor; pickled as torch pickles one."""

    def __init__(self, key, shape, values):
        self.key, self.shape, self.values = key, tuple(shape), values

    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        storage = Storage(self.key, len(self.values))
        return (_rebuild_tensor_v2,
                (storage, 0, self.shape, tuple(stride), False, collections.OrderedDict()))


class Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
        return None


def tensors():
    out, n = [], 0

    def t(shape):
        nonlocal n
        numel = 1
        for d in shape:
            numel *= d
        tensor = Tensor(str(n), shape, [0.25 * ((n + i) % 7) - 0.5 for i in range(numel)])
        n += 1
        out.append(tensor)
        return tensor

    sd = collections.OrderedDict()
    sd["network.conv1.weight"] = t((4, 3, 3, 3))
    sd["network.layer1.0.conv1.weight"] = t((4, 4, 3, 3))
    sd["network.layer1.0.conv1.sub_distribution.mu"] = t((3,))
    sd["network.layer1.0.conv1.sub_distribution.pi_k"] = t((3,))
    sd["network.layer1.0.conv1.sub_distribution.sigma"] = t((3,))
    sd["network.bn1.running_var"] = t((4,))
    sd["network.linear.weight"] = t((10, 4))
    optimizer = {
        "state": {0: {"momentum_buffer": t((4, 3, 3, 3))}, 1: {"momentum_buffer": None}},
        "param_groups": [{"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                          "nesterov": False, "params": list(range(7))}],
    }
    checkpoint = {"epoch": 3, "state_dict": sd, "best_top1": 91.25, "best_top5": 99.5,
                  "bits": 4, "optimizer": optimizer, "history": [0.5 * i for i in range(50)],
                  "big": 1 << 40, "name": "resnet20 ünïcode"}
    return checkpoint, out


def put(z, name, data):
    """A stored entry with a fixed date, so the files are reproducible."""
    z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)


def main():
    checkpoint, storages = tensors()
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(checkpoint)
    with zipfile.ZipFile("fixtures/pth/checkpoint.pth.tar", "w", zipfile.ZIP_STORED) as z:
        put(z, "archive/data.pkl", buf.getvalue())
        for s in storages:
            put(z, f"archive/data/{s.key}", struct.pack(f"<{len(s.values)}f", *s.values))
        put(z, "archive/version", "3\n")
    sd = collections.OrderedDict(
        (f"t{i}", Tensor("0", (1024,), [])) for i in range(200))
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(sd)
    with zipfile.ZipFile("fixtures/pth/shared_storage.pth", "w", zipfile.ZIP_STORED) as z:
        put(z, "archive/data.pkl", buf.getvalue())
        put(z, "archive/data/0", bytes(4096))
    plain = {"epoch": 3, "state": {0: {"buf": [1.5, 2.5]}, 1: None},
             "groups": [{"lr": 0.1, "params": [0, 1, 2]}], "name": "x" * 300,
             "blob": b"\x00\x01" * 200, "t": (1, (2, (3, (4,)))), "s": {1, 2},
             "f": frozenset({3}), "neg": -(1 << 40), "o": collections.OrderedDict(a=1)}
    for p in range(6):
        with open(f"fixtures/pth/nested.p{p}.pkl", "wb") as f:
            pickle.dump(plain, f, protocol=p)


main()
