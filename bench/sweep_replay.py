#!/usr/bin/python3
"""Replays stopping rules over a full search's recorded learning curves.

Every trial of a sweep run with --scheduler none reports its metric at every
epoch; training is deterministic (seeded, threads 1), so a trial stopped at
epoch e by any rule would have reported exactly these values up to e. This
replays, over those curves and the epochs' recorded durations, P trainers
taking trials in a given order, and for each order counts the epochs a rule
trains and the best value it reaches:

  ray-asha     Ray Tune's AsyncHyperBandScheduler (= mlq's asha): rungs at
               grace * rf^k below max_t; at a rung a trial goes on unless its
               value is below the (1 - 1/rf) numpy percentile of the values
               recorded there so far by the others (the first goes on)
  optuna-sha   Optuna's SuccessiveHalvingPruner(min_resource=grace,
               reduction_factor=rf): the same rungs; a trial goes on only if
               it is in the top floor(n/rf) of the n values recorded there,
               itself included (the best so far while n < rf)
  promote      the ASHA of Li et al.'s Algorithm 2, for reference: a trial
               pauses at each rung and a free trainer resumes the best paused
               one that is in its rung's top floor(n/rf), else starts a new one
               (mlq does not implement it: it needs trials paused and resumed)
  sync-sh      synchronous successive halving, for reference: every trial to
               the first rung, the top 1/rf of them to the next, and so on

It prints the trials taken in their sweep order, then the spread over
--orders random orders (the order in which trials reach a rung is what makes
the asynchronous rules promote more or fewer than 1/rf). With --asha ID it
first checks every decision that sweep recorded against Ray's rule.

usage: sweep_replay.py --db DB --full ID [--asha ID] [--trainers P] [--orders N]
                       [--reduction-factor RF] [--grace-period G] [--tolerance POINTS]
"""
import argparse
import heapq
import random
import sqlite3

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--db", required=True)
p.add_argument("--full", type=int, required=True)
p.add_argument("--asha", type=int)
p.add_argument("--trainers", type=int, default=1)
p.add_argument("--orders", type=int, default=1000)
p.add_argument("--reduction-factor", type=int, default=4)
p.add_argument("--grace-period", type=int, default=1)
p.add_argument("--tolerance", type=float, default=0.3)
a = p.parse_args()
db = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
RF, G = a.reduction_factor, a.grace_period
metric, mode = db.execute("SELECT metric, mode FROM sweeps WHERE id = ?", (a.full,)).fetchone()
sign = 1.0 if mode == "max" else -1.0  # values below are "higher is better"

if a.asha:
    rows = db.execute("SELECT rung, trial, value, decision FROM sweep_decisions WHERE sweep = ? "
                      "ORDER BY time", (a.asha,)).fetchall()
    rf_asha, = db.execute("SELECT reduction_factor FROM sweeps WHERE id = ?", (a.asha,)).fetchone()
    rec, bad = {}, 0
    for rung, trial, value, decision in rows:
        r = rec.setdefault(rung, [])
        v = sign * value if value is not None else np.nan
        finite = [x for x in r if not np.isnan(x)]
        cut = np.percentile(finite, 100 * (1 - 1 / rf_asha)) if finite else None
        stop = cut is not None and (np.isnan(v) or v < cut)
        bad += stop != (decision == "stop")
        r.append(v)
    print(f"sweep {a.asha}'s {len(rows)} decisions against Ray Tune's rule: {bad} differ")

curves, durations = {}, {}
for trial, job, started in db.execute("SELECT t.trial, t.job, j.started FROM sweep_trials t JOIN "
                                      "jobs j ON j.id = t.job WHERE t.sweep = ?", (a.full,)):
    pts = db.execute("SELECT epoch, value, time FROM metrics WHERE run = ? AND key = ? ORDER BY "
                     "epoch", (job, metric)).fetchall()
    curves[trial] = np.array([sign * v if v is not None else np.nan for _, v, _ in pts])
    durations[trial] = np.diff([started] + [t for _, _, t in pts])
N = len(curves)
MAXT = min(len(c) for c in curves.values())
rungs = []
m = G
while m < MAXT:
    rungs.append(m)
    m *= RF
best_full = max(np.nanmax(c) for c in curves.values())


def ray_asha(recorded, v):
    finite = [x for x in recorded if not np.isnan(x)]
    return bool(finite) and (np.isnan(v) or v < np.percentile(finite, 100 * (1 - 1 / RF)))


def optuna_sha(recorded, v):
    if np.isnan(v):
        return True
    comp = sorted([x for x in recorded if not np.isnan(x)] + [v])
    k = max(len(comp) // RF, 1)
    return v < comp[-k]


def replay(order, rule):
    rec = {r: [] for r in rungs}
    q = list(order)
    ev, epochs, best = [], 0, -np.inf
    for w in range(min(a.trainers, len(q))):
        k = q.pop(0)
        heapq.heappush(ev, (durations[k][0], w, k, 1))
    while ev:
        t, w, k, e = heapq.heappop(ev)
        v = curves[k][e - 1]
        epochs += 1
        best = max(best, v) if not np.isnan(v) else best
        stop = e >= MAXT
        if e in rec:
            stop = stop or rule(rec[e], v)
            rec[e].append(v)
        if not stop:
            heapq.heappush(ev, (t + durations[k][e], w, k, e + 1))
        elif q:
            k = q.pop(0)
            heapq.heappush(ev, (t + durations[k][0], w, k, 1))
    return epochs, best


def promote_asha(order):
    """Li et al.'s Algorithm 2: a free trainer resumes the best paused trial of
    the highest rung that is in its rung's top floor(n/rf) and not yet
    promoted, else starts the next trial; a trial pauses at every rung."""
    q = list(order)
    rec = {r: {} for r in rungs}  # rung -> {trial: value}
    promoted = {r: set() for r in rungs}
    free, ev = list(range(a.trainers)), []
    epochs, best, t = 0, -np.inf, 0.0

    def next_job():
        for r in reversed(rungs):
            vals = sorted(rec[r].items(), key=lambda kv: -np.nan_to_num(kv[1], nan=-np.inf))
            for k, _ in vals[:len(vals) // RF]:
                if k not in promoted[r]:
                    promoted[r].add(k)
                    return k, r
        return (q.pop(0), 0) if q else None

    while True:
        while free:
            job = next_job()
            if job is None:
                break
            k, e0 = job
            w = free.pop()
            heapq.heappush(ev, (t + durations[k][e0], w, k, e0 + 1))
        if not ev:
            break
        t, w, k, e = heapq.heappop(ev)
        v = curves[k][e - 1]
        epochs += 1
        best = max(best, v) if not np.isnan(v) else best
        if e in rec:
            rec[e][k] = v
            free.append(w)
        elif e >= MAXT:
            free.append(w)
        else:
            heapq.heappush(ev, (t + durations[k][e], w, k, e + 1))
    return epochs, best


def sync_sh():
    alive, epochs, prev = list(curves), 0, 0
    for r in rungs + [MAXT]:
        epochs += len(alive) * (r - prev)
        prev = r
        if r == MAXT:
            break
        alive.sort(key=lambda k: -np.nan_to_num(curves[k][r - 1], nan=-np.inf))
        alive = alive[:max(len(alive) // RF, 1)]
    return epochs, max(np.nanmax(curves[k][:MAXT]) for k in curves)


full = N * MAXT
tol = a.tolerance / 100
print(f"{N} trials of {MAXT} epochs ({full} in the full search), rungs {rungs}, reduction factor "
      f"{RF}, {a.trainers} trainer(s); full search's best {metric} {sign * best_full:.4f}")
print(f"{'rule':<11} {'order':<14} {'epochs':>7} {'of full':>8} {'best':>8} {'<= 1/5':>7} "
      f"{'within':>7} {'both':>6}")
rng = random.Random(1)
orders = [rng.sample(range(N), N) for _ in range(a.orders)]
for name, rule in (("ray-asha", ray_asha), ("optuna-sha", optuna_sha)):
    e, b = replay(sorted(curves), rule)
    print(f"{name:<11} {'sweep order':<14} {e:>7} {100 * e / full:>7.1f}% {sign * b:>8.4f} "
          f"{'yes' if e <= full / 5 else 'no':>7} {'yes' if b >= best_full - tol else 'no':>7}")
    res = np.array([replay(o, rule) for o in orders])
    es, bs = res[:, 0], res[:, 1]
    ok_e, ok_b = es <= full / 5, bs >= best_full - tol
    print(f"{'':<11} {f'{a.orders} orders':<14} {es.mean():>7.0f} {100 * es.mean() / full:>7.1f}% "
          f"{'':>8} {100 * ok_e.mean():>6.0f}% {100 * ok_b.mean():>6.0f}% "
          f"{100 * (ok_e & ok_b).mean():>5.0f}%")
    print(f"{'':<11} {'  p10..p90':<14} {np.percentile(es, 10):>4.0f}..{np.percentile(es, 90):<4.0f}")
e, b = promote_asha(sorted(curves))
print(f"{'promote':<11} {'sweep order':<14} {e:>7} {100 * e / full:>7.1f}% {sign * b:>8.4f} "
      f"{'yes' if e <= full / 5 else 'no':>7} {'yes' if b >= best_full - tol else 'no':>7}")
res = np.array([promote_asha(o) for o in orders])
es, bs = res[:, 0], res[:, 1]
ok_e, ok_b = es <= full / 5, bs >= best_full - tol
print(f"{'':<11} {f'{a.orders} orders':<14} {es.mean():>7.0f} {100 * es.mean() / full:>7.1f}% "
      f"{'':>8} {100 * ok_e.mean():>6.0f}% {100 * ok_b.mean():>6.0f}% "
      f"{100 * (ok_e & ok_b).mean():>5.0f}%")
e, b = sync_sh()
print(f"{'sync-sh':<11} {'(no order)':<14} {e:>7} {100 * e / full:>7.1f}% {sign * b:>8.4f}")
