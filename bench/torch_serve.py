#!/usr/bin/python3
"""The serving benchmark's peer: the same seed MLP, exported by `mlq export`, served the
way users write a minimal PyTorch server (TorchServe is not packaged for Debian): a
pyzmq ROUTER loop around torch.inference_mode(), one request at a time. A request is one
frame of float32 rows; the answer one frame of float32 probabilities.

usage: torch_serve.py MODEL.h5 ENDPOINT [--threads T]
"""
import sys

import h5py
import numpy as np
import torch
import zmq


def load(path):
    with h5py.File(path, "r") as m:
        sizes = [int(s) for s in m.attrs["layers"]]
        act = m.attrs["activation"]
        act = act.decode() if isinstance(act, bytes) else str(act)
        mods = []
        for k in range(len(sizes) - 1):
            lin = torch.nn.Linear(sizes[k], sizes[k + 1])
            lin.weight.data = torch.from_numpy(np.asarray(m["layers/%d/weight" % k], np.float32))
            lin.bias.data = torch.from_numpy(np.asarray(m["layers/%d/bias" % k], np.float32))
            mods.append(lin)
            if k + 2 < len(sizes):
                mods.append({"relu": torch.nn.ReLU(), "tanh": torch.nn.Tanh(),
                             "sigmoid": torch.nn.Sigmoid()}[act])
    return torch.nn.Sequential(*mods).eval(), sizes[0]


def main():
    path, endpoint = sys.argv[1], sys.argv[2]
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 1
    torch.set_num_threads(threads)
    model, d = load(path)
    sock = zmq.Context().socket(zmq.ROUTER)
    sock.bind(endpoint)
    print("torch_serve: listening on %s, %d inputs, %d thread(s)" % (endpoint, d, threads),
          flush=True)
    with torch.inference_mode():
        while True:
            ident, payload = sock.recv_multipart()
            x = torch.from_numpy(np.frombuffer(payload, dtype=np.float32).reshape(-1, d))
            p = torch.softmax(model(x), dim=1)
            sock.send_multipart([ident, p.numpy().tobytes()])


if __name__ == "__main__":
    main()
