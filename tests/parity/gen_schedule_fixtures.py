#!/usr/bin/python3
"""Generates schedule_fixtures.json for tests/test_schedule.c with PyTorch 1.13.

Run once with Debian's python3-torch:
    /usr/bin/python3 tests/parity/gen_schedule_fixtures.py
The output is committed; the C test does not need torch.

Each case is an mlq `optimizer.schedule` (docs/spec.md), the optimizer's
lr, and the learning rate in effect before each of `steps` calls of
scheduler.step() (scheduler.step(metric) for ReduceLROnPlateau, fed the
case's fixed metric sequence), as a PyTorch loop sees it:
    for epoch in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        train(...); scheduler.step()
Floats are written with repr, so they read back to the same double.
"""
import json
import os
import warnings

import torch
from torch.optim import lr_scheduler as S

warnings.filterwarnings("ignore")  # optimizer.step() is not called; the lr is all we read


def make(opt, sc):
    t = sc["type"]
    if t == "step":
        return S.StepLR(opt, step_size=sc["step_size"], gamma=sc.get("gamma", 0.1))
    if t == "multistep":
        return S.MultiStepLR(opt, milestones=sc["milestones"], gamma=sc.get("gamma", 0.1))
    if t == "exponential":
        return S.ExponentialLR(opt, gamma=sc["gamma"])
    if t == "cosine":
        return S.CosineAnnealingLR(opt, T_max=sc["t_max"], eta_min=sc.get("eta_min", 0))
    if t == "linear":
        return S.LinearLR(opt, start_factor=sc.get("start_factor", 1.0 / 3),
                          end_factor=sc.get("end_factor", 1.0),
                          total_iters=sc.get("total_iters", 5))
    if t == "reduce_on_plateau":
        return S.ReduceLROnPlateau(opt, mode=sc.get("mode", "min"), factor=sc.get("factor", 0.1),
                                   patience=sc.get("patience", 10),
                                   threshold=sc.get("threshold", 1e-4),
                                   threshold_mode=sc.get("threshold_mode", "rel"),
                                   cooldown=sc.get("cooldown", 0), min_lr=sc.get("min_lr", 0),
                                   eps=sc.get("eps", 1e-8))
    if t == "sequential":
        parts = [make(opt, p) for p in sc["schedules"]]
        return S.SequentialLR(opt, schedulers=parts, milestones=sc["milestones"])
    raise ValueError(t)


def run(name, lr, sc, steps, metrics=None):
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr)
    sched = make(opt, sc)
    lrs = []
    for i in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics[i])
    case = {"name": name, "lr": lr, "schedule": sc, "steps": steps, "lrs": lrs}
    if metrics is not None:
        case["metrics"] = metrics
    return case


# A loss that falls, stalls, wobbles within the threshold, falls again.
LOSS = [1.0, 0.8, 0.7, 0.7, 0.69995, 0.71, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6, 0.5, 0.55, 0.52,
        0.51, 0.5, 0.5, 0.5, 0.5, 0.49, 0.4999, 0.49, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
ACC = [0.5, 0.6, 0.605, 0.61, 0.7, 0.7, 0.705, 0.7, 0.69, 0.8, 0.8, 0.8, 0.8, 0.81, 0.809,
       0.85, 0.85, 0.85, 0.85, 0.85]

cases = [
    run("step", 0.1, {"type": "step", "step_size": 3, "gamma": 0.5}, 14),
    run("step_default_gamma", 0.01, {"type": "step", "step_size": 1}, 8),
    run("multistep", 0.05, {"type": "multistep", "milestones": [2, 5, 9], "gamma": 0.3}, 13),
    run("exponential", 0.01, {"type": "exponential", "gamma": 0.9}, 25),
    run("cosine", 0.001, {"type": "cosine", "t_max": 12}, 40),
    run("cosine_eta_min", 0.1, {"type": "cosine", "t_max": 5, "eta_min": 1e-5}, 23),
    run("cosine_long", 0.003, {"type": "cosine", "t_max": 200, "eta_min": 1e-6}, 210),
    run("linear", 0.1, {"type": "linear", "start_factor": 0.25, "end_factor": 1.0,
                        "total_iters": 4}, 8),
    run("linear_default", 0.001, {"type": "linear"}, 9),
    run("linear_decay", 0.2, {"type": "linear", "start_factor": 1.0, "end_factor": 0.05,
                              "total_iters": 7}, 10),
    run("warmup_cosine", 0.001, {"type": "sequential", "milestones": [3], "schedules": [
        {"type": "linear", "start_factor": 0.1, "total_iters": 3},
        {"type": "cosine", "t_max": 9}]}, 15),
    run("warmup_step_exponential", 0.05, {"type": "sequential", "milestones": [2, 6], "schedules": [
        {"type": "linear", "start_factor": 0.5, "total_iters": 2},
        {"type": "step", "step_size": 2, "gamma": 0.5},
        {"type": "exponential", "gamma": 0.8}]}, 12),
    run("plateau", 0.1, {"type": "reduce_on_plateau", "factor": 0.5, "patience": 2,
                         "cooldown": 1, "min_lr": 0.004}, len(LOSS), LOSS),
    run("plateau_default", 0.01, {"type": "reduce_on_plateau"}, len(LOSS), LOSS),
    run("plateau_max_abs", 0.02, {"type": "reduce_on_plateau", "metric": "val_accuracy",
                                  "mode": "max", "threshold": 0.01, "threshold_mode": "abs",
                                  "patience": 1, "factor": 0.2}, len(ACC), ACC),
]

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schedule_fixtures.json")
with open(out, "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases}, f, indent=1)
    f.write("\n")
print("wrote", out, len(cases), "cases")
