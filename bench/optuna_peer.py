#!/usr/bin/python3
"""The sweep benchmark's peer: Optuna's pruner over the same trials as mlq's sweep.

Optuna (Debian's python3-optuna) decides; mlq's broker and trainers train, so
the training is the same as in mlq's own sweeps and only the pruning rule
differs. The configurations are those of an mlq sweep (--sweep, the full
search), enqueued in trial order (study.enqueue_trial), so both search the
same 64 points; Optuna's sampler draws nothing. Each Optuna trial submits its
spec with `mlq submit`, reports val_accuracy after every epoch as the broker
stores it (trial.report(value, epoch)), and on trial.should_prune() cancels
the job with `mlq cancel` and raises TrialPruned, as an Optuna user's
objective does. n_jobs threads (one per trainer) run trials at once.

Pruners (Optuna's own, with its defaults except where said):
  sha     SuccessiveHalvingPruner(min_resource=1, reduction_factor=4,
          min_early_stopping_rate=0): Optuna's ASHA; min_resource=1 is the
          grace period of mlq's and Ray Tune's ASHA ("auto" would wait for a
          whole trial to finish before pruning any)
  median  MedianPruner() (n_startup_trials=5, n_warmup_steps=0)

Its jobs are tagged with --experiment (default optuna-PRUNER): the epochs
they trained are read from the database like those of mlq's sweeps.

usage: optuna_peer.py --mlq PATH --db DB --sweep ID [--pruner sha|median]
                      [--n-jobs N] [--experiment NAME] [--tmp DIR]
Prints one JSON line: {"pruner", "trials", "pruned", "epochs", "best", "seconds"}.
"""
import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

import optuna

p = argparse.ArgumentParser()
p.add_argument("--mlq", required=True)
p.add_argument("--db", required=True)
p.add_argument("--sweep", type=int, required=True)
p.add_argument("--pruner", choices=("sha", "median"), default="sha")
p.add_argument("--n-jobs", type=int, default=1)
p.add_argument("--experiment")
p.add_argument("--tmp", default=tempfile.gettempdir())
a = p.parse_args()
experiment = a.experiment or f"optuna-{a.pruner}"


def query(sql, args=()):
    db = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


(base_text,) = query("SELECT spec FROM sweeps WHERE id = ?", (a.sweep,))[0]
base = json.loads(base_text)
trials = [(t, json.loads(params)) for t, params in
          query("SELECT trial, params FROM sweep_trials WHERE sweep = ? ORDER BY trial", (a.sweep,))]
if not trials:
    sys.exit(f"optuna_peer: sweep {a.sweep} has no trials in {a.db}")


def set_field(doc, dotted, value):
    keys = dotted.split(".")
    for k in keys[:-1]:
        doc = doc.setdefault(k, {})
    doc[keys[-1]] = value


def mlq(*args):
    r = subprocess.run([a.mlq, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"mlq {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


# Optuna's categorical choices are scalars: a list value (model.layers) goes
# through a string and back.
def encode(v):
    return json.dumps(v) if isinstance(v, list) else v


def decode(v):
    return json.loads(v) if isinstance(v, str) and v.startswith("[") else v


choices = {}
for _, params in trials:
    for k, v in params.items():
        choices.setdefault(k, [])
        if encode(v) not in choices[k]:
            choices[k].append(encode(v))


def objective(trial):
    spec = json.loads(json.dumps(base))
    for k, cs in sorted(choices.items()):
        set_field(spec, k, decode(trial.suggest_categorical(k, cs)))
    spec.pop("name", None)
    path = os.path.join(a.tmp, f"optuna-{experiment}-{trial.number}.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    job = json.loads(mlq("submit", "--spec", path, "--experiment", experiment, "--json"))["id"]
    trial.set_user_attr("job", job)
    seen = 0
    last = None
    while True:
        rows = query("SELECT epoch, value FROM metrics WHERE run = ? AND key = 'val_accuracy' "
                     "AND epoch > ? ORDER BY epoch", (job, seen))
        for epoch, value in rows:
            seen = epoch
            last = value
            trial.report(value if value is not None else float("nan"), epoch)
            if trial.should_prune():
                # The job may have ended meanwhile (a prune at its last epoch).
                subprocess.run([a.mlq, "cancel", str(job)], capture_output=True)
                raise optuna.TrialPruned()
        (state,) = query("SELECT state FROM jobs WHERE id = ?", (job,))[0]
        if state in ("succeeded", "failed", "cancelled", "stopped") and not rows:
            if seen == 0 or state != "succeeded":
                raise RuntimeError(f"job {job} ended {state} after {seen} epochs")
            return last if last is not None else float("nan")
        if not rows:
            time.sleep(0.05)


optuna.logging.set_verbosity(optuna.logging.WARNING)
pruner = (optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4,
                                                 min_early_stopping_rate=0)
          if a.pruner == "sha" else optuna.pruners.MedianPruner())
study = optuna.create_study(direction="maximize", pruner=pruner,
                            sampler=optuna.samplers.RandomSampler(seed=0))
for _, params in trials:
    study.enqueue_trial({k: encode(v) for k, v in params.items()})
t0 = time.time()
study.optimize(objective, n_trials=len(trials), n_jobs=a.n_jobs)
secs = time.time() - t0
(epochs, best), = query(
    "SELECT sum(e), max(b) FROM (SELECT max(m.epoch) AS e, max(CASE WHEN m.key = 'val_accuracy' "
    "THEN m.value END) AS b FROM jobs j JOIN metrics m ON m.run = j.id AND m.key IN "
    "('train_loss', 'val_accuracy') WHERE j.experiment = ? GROUP BY j.id)", (experiment,))
pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
print(json.dumps({"pruner": a.pruner, "optuna": optuna.__version__, "trials": len(study.trials),
                  "pruned": pruned, "epochs": epochs, "best": best, "seconds": round(secs, 1)}))
