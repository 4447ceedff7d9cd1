"""mlq for Python: submit jobs, wait for them, infer with deployments, read runs.

    import mlq
    c = mlq.Client()                                   # as `mlq` connects (docs/python.md)
    run = c.submit({"kind": "train", "dataset": {"path": "train.h5"},
                    "model": {"layers": [784, 128, 10]}, "epochs": 2})
    c.wait(run)["state"]                               # 'succeeded'
    c.deploy(run, "fmnist")
    answer = c.infer("fmnist", x)                      # x: numpy (N, 784) or (784,)
    answer.classes, answer.probabilities
    import pandas as pd
    pd.DataFrame(mlq.runs())                           # rows of the database, as they are
    pd.DataFrame(mlq.metrics(run))

Standard library and pyzmq (Debian's python3-zmq); numpy for infer only.
The wire protocol is docs/protocol.md, serving's additions docs/serving.md.
"""

import json
import os
import sqlite3
import time
from collections import namedtuple

import zmq

__all__ = ["Client", "Error", "Inference", "runs", "metrics", "deployments_table", "db_path"]
__version__ = "0.1.0"

HEADER = b"MLQ1"
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_TIMEOUT_MS = 5000


class Error(Exception):
    """The broker's ERROR reply (code: not_found, bad_request, bad_input, timeout, ...),
    or "unreachable" when it did not answer."""

    def __init__(self, message, code="error"):
        super().__init__(message)
        self.code = code


Inference = namedtuple("Inference", "classes probabilities outputs run epoch generation batch")
Inference.__doc__ = """An infer answer: classes (N,) int and probabilities (N, K) for a
classifier (outputs is the same array), or classes None and outputs (N, K) for a
regression model; which run, epoch and generation answered; rows of its forward pass."""


# ---- configuration, as mlq reads it (docs/configuration.md) ------------------------------

def _config():
    path = os.environ.get("MLQ_CONFIG") or "/etc/mlq/mlq.conf"
    conf = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.split(" #")[0].strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                k, v = line.split("=", 1)
                conf[k.strip()] = v.strip()
    except FileNotFoundError:
        if os.environ.get("MLQ_CONFIG"):
            raise Error("configuration file %s does not exist" % path, "config")

    def get(key, alias=None):
        env = os.environ.get("MLQ_" + key.upper().replace(".", "_"))
        if env:
            return env
        if alias and os.environ.get(alias):
            return os.environ[alias]
        return conf.get(key, "")

    return get


def _up_state():
    """The running mlq up's state file as a dict ({} without one): its endpoint and
    database stand in for the defaults, as for mlq (docs/configuration.md)."""
    path = os.path.join(_user_dir(), "up.json")
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        pid = int(state["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    try:
        exe = os.readlink("/proc/%d/exe" % pid)
        if exe.endswith(" (deleted)"):
            exe = exe[:-len(" (deleted)")]
        if state.get("exe") and exe != state["exe"]:
            return {}
    except OSError:
        pass
    return state


def _user_dir():
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "mlq")


def _read_cert(path):
    """(public, secret or None) Z85 keys of a czmq certificate file."""
    public = secret = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            for key in ("public-key", "secret-key"):
                if line.startswith(key):
                    value = line.split("=", 1)[1].strip().strip('"')
                    if key == "public-key":
                        public = value
                    else:
                        secret = value
    if not public:
        raise Error("%s: no public-key in it (a czmq certificate: docs/security.md)" % path, "keys")
    return public, secret


def _resolve_keys(secret_key, broker_key, get):
    """(own public, own secret, broker public) for CURVE, or None for plaintext, as mlq
    decides (docs/security.md)."""
    own = secret_key or get("client.secret_key") or os.path.join(_user_dir(), "mlq.key_secret")
    broker = broker_key or get("broker.public_key")
    if not broker:
        pinned = os.path.join(os.path.dirname(own), "broker.key")
        if os.path.exists(pinned):
            broker = pinned
    if not broker:
        if secret_key or get("client.secret_key"):
            raise Error("a client key is given but no broker key: set broker.public_key", "keys")
        return None
    if len(broker) != 40 or os.path.exists(broker):
        broker = _read_cert(broker)[0]
    public, secret = _read_cert(own)
    if not secret:
        raise Error("%s holds no secret-key" % own, "keys")
    return public, secret, broker


# ---- the client -------------------------------------------------------------------------

class Client:
    """One DEALER socket to the broker. endpoint: None = broker.endpoint of the
    configuration (MLQ_BROKER); keys as mlq finds them, or secret_key (a .key_secret
    file) and broker_key (Z85 or a .key file). Use from one thread at a time."""

    def __init__(self, endpoint=None, secret_key=None, broker_key=None,
                 timeout_ms=None, context=None):
        get = _config()
        self.endpoint = (endpoint or get("broker.endpoint", "MLQ_BROKER") or
                         _up_state().get("endpoint") or DEFAULT_ENDPOINT)
        self.timeout_ms = timeout_ms or int(os.environ.get("MLQ_TIMEOUT_MS") or DEFAULT_TIMEOUT_MS)
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        keys = _resolve_keys(secret_key, broker_key, get)
        if keys:
            public, secret, broker = keys
            self._sock.curve_publickey = public.encode()
            self._sock.curve_secretkey = secret.encode()
            self._sock.curve_serverkey = broker.encode()
        self._sock.connect(self.endpoint)
        self._next_id = 1

    def close(self):
        self._sock.close(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, cmd, body=None, binary=None, match_id=None, wait_ms=None):
        """Sends cmd with body (a dict) and an optional binary frame; returns (body,
        binary or None) of the OK reply, or raises Error."""
        frames = [HEADER, cmd.encode(), json.dumps(body or {}).encode()]
        if binary is not None:
            frames.append(binary)
        self._sock.send_multipart(frames, copy=False)
        deadline = time.monotonic() + (wait_ms or self.timeout_ms) / 1000.0
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0 or not self._sock.poll(left):
                raise Error("no answer from the broker at %s within %d ms: is mlq-broker "
                            "running?" % (self.endpoint, wait_ms or self.timeout_ms), "unreachable")
            reply = self._sock.recv_multipart()
            if len(reply) < 3 or reply[0] != HEADER:
                continue
            answer = json.loads(reply[2])
            if match_id is not None and answer.get("id") != match_id:
                continue  # an answer to an earlier request that timed out
            if reply[1] == b"OK":
                return answer, (reply[3] if len(reply) > 3 else None)
            raise Error(answer.get("error", "the broker refused the request"),
                        answer.get("code", "error"))

    # jobs (docs/jobs.md)
    def submit(self, spec, request_id=None):
        """Queues a job spec (a dict, docs/spec.md); returns its id."""
        rid = request_id or "py-%d-%x-%d" % (os.getpid(), time.time_ns(), id(self))
        return self.request("SUBMIT", {"spec": spec, "request_id": rid})[0]["id"]

    def status(self, job_id):
        return self.request("STATUS", {"id": job_id})[0]

    def wait(self, job_id, timeout=None, poll=0.2):
        """Waits until the job ends (or timeout seconds); returns its job dict."""
        end = time.monotonic() + timeout if timeout else None
        while True:
            job = self.status(job_id)["job"]
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            if end and time.monotonic() >= end:
                raise Error("job %d did not end within %s s" % (job_id, timeout), "timeout")
            time.sleep(poll)

    def cancel(self, job_id):
        return self.request("CANCEL", {"id": job_id})[0]["state"]

    def queue(self):
        return self.request("QUEUE")[0]

    # serving (docs/serving.md)
    def deploy(self, run, name, replicas=1, max_batch=64, max_delay_us=0, checkpoint="last"):
        return self.request("DEPLOY", {"name": name, "run": run, "replicas": replicas,
                                       "max_batch": max_batch, "max_delay_us": max_delay_us,
                                       "checkpoint": str(checkpoint)})[0]

    def deployments(self, name=None):
        return self.request("DEPLOYMENTS", {"name": name} if name else {})[0]["deployments"]

    def undeploy(self, name):
        return self.request("UNDEPLOY", {"name": name})[0]

    def wait_ready(self, name, timeout=30.0):
        """Waits until a replica serves the deployment's current generation."""
        end = time.monotonic() + timeout
        while True:
            d = self.deployments(name)[0]
            if any(r["state"] == "ready" and r["generation"] == d["generation"]
                   for r in d["replica_list"]):
                return d
            if d["state"] == "failed":
                raise Error(d.get("error", "the deployment cannot be served"), "unavailable")
            if time.monotonic() >= end:
                raise Error("deployment %s: no replica ready in %s s" % (name, timeout), "timeout")
            time.sleep(0.05)

    def infer(self, name, x):
        """Rows x (numpy (N, D) or (D,), any float dtype) through deployment name."""
        import numpy as np
        a = np.ascontiguousarray(x, dtype="<f4")
        if a.ndim == 1:
            a = a.reshape(1, -1)
        if a.ndim != 2 or a.shape[0] < 1:
            raise Error("infer: x must be one row or a (rows, inputs) array", "bad_request")
        rid = self._next_id
        self._next_id += 1
        body = {"deployment": name, "rows": int(a.shape[0]), "id": rid,
                "deadline_ms": self.timeout_ms}
        answer, out = self.request("INFER", body, a.tobytes(), match_id=rid,
                                   wait_ms=self.timeout_ms + 1000)
        k = answer["outputs"]
        outputs = np.frombuffer(out, dtype="<f4").reshape(a.shape[0], k)
        classes = answer.get("classes")
        classes = np.asarray(classes, dtype=np.int64) if classes is not None else None
        return Inference(classes, outputs if classes is not None else None, outputs,
                         answer["run"], answer["epoch"], answer["generation"], answer["batch"])


# ---- the database, read-only (docs/schema.md) -------------------------------------------

def db_path(db=None):
    """The database mlq reads: db, MLQ_DB, db.path, a running mlq up's, or
    $XDG_DATA_HOME/mlq/mlq.db."""
    if db:
        return db
    p = _config()("db.path", "MLQ_DB") or _up_state().get("db")
    if p:
        return p
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                           "share")
    return os.path.join(base, "mlq", "mlq.db")


def _rows(db, sql, args=()):
    path = db_path(db)
    if not os.path.exists(path):
        raise Error("%s: no such database" % path, "not_found")
    con = sqlite3.connect("file:%s?mode=ro" % path.replace("?", "%3f").replace("#", "%23"),
                          uri=True)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def runs(db=None, kind=None, state=None):
    """Jobs as plain rows (dicts), newest first, with each run's final metrics as
    columns (train_loss, val_loss, val_accuracy, ...): pandas.DataFrame(runs())."""
    where, args = [], []
    if kind:
        where.append("kind = ?")
        args.append(kind)
    if state:
        where.append("state = ?")
        args.append(state)
    rows = _rows(db, "SELECT id, kind, state, name, priority, attempts, trainer, run, "
                     "submitted, started, finished, error, owner, spec FROM jobs" +
                 (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC", args)
    finals = {}
    for f in _rows(db, "SELECT run, key, value FROM final_metrics"):
        finals.setdefault(f["run"], {})[f["key"]] = f["value"]
    for r in rows:
        r.update(finals.get(r["id"], {}))
    return rows


def metrics(run, db=None, key=None):
    """A run's metrics as rows {run, key, step, epoch, value, time}, by key then step."""
    sql = "SELECT run, key, step, epoch, value, time FROM metrics WHERE run = ?"
    args = [run]
    if key:
        sql += " AND key = ?"
        args.append(key)
    return _rows(db, sql + " ORDER BY key, step", args)


def deployments_table(db=None):
    """The deployments table as rows (the broker's live counters: Client.deployments)."""
    return _rows(db, "SELECT * FROM deployments ORDER BY name")
