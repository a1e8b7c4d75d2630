#!/usr/bin/python3
"""A handwritten-digits classifier served over the Open Inference Protocol v2.

jetserve runs it as a process-runtime replica (see config.yaml beside this
file): the worker starts it with PORT in its environment, waits for
GET /v2/health/ready and proxies requests to it. It trains at start-up, on
the digits data set that scikit-learn ships (8x8 images, 16 grey levels, no
network), a support-vector classifier on a fixed 75/25 split: about 0.99
accuracy on the held-out quarter, in well under a second.

Endpoints (OIP v2 REST):
  GET  /v2                          server metadata
  GET  /v2/health/live              200 once the process serves
  GET  /v2/health/ready             200 once the model is trained
  GET  /v2/models/digits            model metadata
  GET  /v2/models/digits/ready      200 once the model is trained
  POST /v2/models/digits/infer      input [N, 64] FP32 (values 0..16) ->
                                    "label" [N] INT64 and "probabilities" [N, 10] FP32
Errors are JSON {"error": "..."}: 400 for a malformed request or tensor,
404 for an unknown path or model.

  server.py                 serve on $PORT (default 8080)
  server.py --dump-test N   print N held-out samples with their labels as
                            JSON {"inputs": [[64 floats], ...], "labels": [...]}

Only the standard library, numpy and scikit-learn (Debian: python3-numpy,
python3-sklearn). SIGTERM stops it cleanly: requests in flight finish.
"""

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

MODEL = os.environ.get("MODEL_NAME", "digits")
VERSION = "1"
FEATURES = 64
CLASSES = 10
INPUT_NAME = "input-0"
MAX_BODY = 16 << 20


def split():
    """The fixed train/test split: the same on every start and for --dump-test."""
    d = load_digits()
    x = d.data.astype(np.float32)
    return train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target)


def train():
    x_train, x_test, y_train, y_test = split()
    clf = SVC(gamma=0.001, probability=True, random_state=0)
    clf.fit(x_train, y_train)
    accuracy = float((clf.predict(x_test) == y_test).mean())
    print(f"digits: trained on {len(x_train)} images, held-out accuracy {accuracy:.4f}", flush=True)
    return clf


class BadRequest(Exception):
    pass


def decode_input(req):
    """The [N, 64] FP32 tensor of an OIP infer request, as a numpy array."""
    if not isinstance(req, dict):
        raise BadRequest("request body must be a JSON object")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise BadRequest(f"want exactly one input tensor ({INPUT_NAME}, [N, {FEATURES}] FP32)")
    t = inputs[0]
    if not isinstance(t, dict):
        raise BadRequest("inputs[0] must be an object")
    if t.get("datatype") != "FP32":
        raise BadRequest(f"inputs[0].datatype must be FP32, got {t.get('datatype')!r}")
    shape = t.get("shape")
    if (not isinstance(shape, list) or len(shape) != 2 or not all(isinstance(n, int) for n in shape)
            or shape[0] < 1 or shape[1] != FEATURES):
        raise BadRequest(f"inputs[0].shape must be [N, {FEATURES}] with N >= 1, got {shape!r}")
    try:
        data = np.asarray(t.get("data"), dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as e:
        raise BadRequest(f"inputs[0].data must be numbers: {e}")
    if data.size != shape[0] * shape[1]:
        raise BadRequest(f"inputs[0].data has {data.size} values, shape {shape} needs {shape[0] * shape[1]}")
    if not np.isfinite(data).all():
        raise BadRequest("inputs[0].data must be finite numbers")
    return data.reshape(shape[0], FEATURES)


class Server(ThreadingHTTPServer):
    """A thread per connection; counts the requests in flight so that a stop
    waits for them, and only for them (not for idle keep-alive connections)."""

    daemon_threads = True

    def __init__(self, addr, handler, model):
        super().__init__(addr, handler)
        self.model = model
        self.busy = 0
        self.idle = threading.Condition()

    def begin(self):
        with self.idle:
            self.busy += 1

    def end(self):
        with self.idle:
            self.busy -= 1
            self.idle.notify_all()

    def wait_idle(self, timeout):
        with self.idle:
            return self.idle.wait_for(lambda: self.busy == 0, timeout)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the worker reuses connections
    server_version = "jetserve-digits/" + VERSION

    def log_message(self, fmt, *args):  # no line per request in the worker's log
        pass

    def send_json(self, status, obj):
        body = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, msg):
        self.send_json(status, {"error": msg})

    def do_GET(self):
        self.server.begin()
        try:
            self.get()
        finally:
            self.server.end()

    def do_POST(self):
        self.server.begin()
        try:
            self.post()
        finally:
            self.server.end()

    def get(self):
        path = self.path.split("?", 1)[0]
        model = "/v2/models/" + MODEL
        if path == "/v2":
            self.send_json(200, {"name": "jetserve-digits", "version": VERSION, "extensions": []})
        elif path == "/v2/health/live":
            self.send_json(200, {"live": True})
        elif path in ("/v2/health/ready", model + "/ready"):
            self.send_json(200, {"ready": True})
        elif path in (model, model + "/versions/" + VERSION):
            self.send_json(200, {
                "name": MODEL, "versions": [VERSION], "platform": "scikit-learn",
                "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, FEATURES]}],
                "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                            {"name": "probabilities", "datatype": "FP32", "shape": [-1, CLASSES]}],
            })
        elif path.startswith("/v2/models/"):
            self.error(404, f"unknown model or path {path!r}: this server serves model {MODEL!r}")
        else:
            self.error(404, f"unknown path {path!r}")

    def post(self):
        path = self.path.split("?", 1)[0]
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self.error(400, f"Content-Length must be 0..{MAX_BODY}")
            return
        body = self.rfile.read(length)
        if path not in ("/v2/models/" + MODEL + "/infer", "/v2/models/" + MODEL + "/versions/" + VERSION + "/infer"):
            self.error(404, f"unknown model or path {path!r}: POST /v2/models/{MODEL}/infer")
            return
        try:
            req = json.loads(body or b"null")
        except ValueError as e:
            self.error(400, f"malformed JSON body: {e}")
            return
        try:
            x = decode_input(req)
        except BadRequest as e:
            self.error(400, str(e))
            return
        proba = self.server.model.predict_proba(x).astype(np.float32)
        labels = self.server.model.classes_[proba.argmax(axis=1)].astype(np.int64)
        out = {
            "model_name": MODEL, "model_version": VERSION,
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [len(labels)], "data": labels.tolist()},
                {"name": "probabilities", "datatype": "FP32", "shape": [len(labels), CLASSES],
                 "data": [round(float(p), 6) for p in proba.reshape(-1)]},
            ],
        }
        if isinstance(req.get("id"), str):
            out["id"] = req["id"]
        self.send_json(200, out)


def dump_test(n):
    _, x_test, _, y_test = split()
    n = max(0, min(n, len(x_test)))
    json.dump({"inputs": x_test[:n].tolist(), "labels": y_test[:n].tolist()}, sys.stdout)
    sys.stdout.write("\n")


def main(argv):
    if len(argv) == 2 and argv[0] == "--dump-test":
        dump_test(int(argv[1]))
        return 0
    if argv:
        print("usage: server.py [--dump-test N]", file=sys.stderr)
        return 2
    port = int(os.environ.get("PORT", "8080"))
    model = train()
    server = Server(("127.0.0.1", port), Handler, model)

    def stop(signum, frame):
        # shutdown() waits for serve_forever to return: not from its thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"digits: serving OIP v2 model {MODEL!r} on 127.0.0.1:{port}", flush=True)
    server.serve_forever()
    server.wait_idle(10)  # requests in flight finish; idle connections do not hold the exit
    server.server_close()
    print("digits: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
