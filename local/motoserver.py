"""moto as a separate process (DynamoDB with streams, Secrets Manager), its state kept across restarts.

moto keeps state in memory only; its recorder appends each request to a file, and replaying that
file rebuilds the state. We record only requests that change state (reads and stream polls would
make the file, and every restart, grow without end), and replay before taking new requests.

    python -m local.motoserver --port 8001 --recording .oms/moto-recording.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

_READ_ONLY_PREFIXES = ("Get", "Describe", "List", "Query", "Scan", "BatchGet", "TransactGet")


def _changes_state(request) -> bool:
    target = request.headers.get("X-Amz-Target", "")
    action = target.rpartition(".")[2]
    if target.startswith("DynamoDBStreams_"):
        return False
    return not action.startswith(_READ_ONLY_PREFIXES)


def _filter_recorder() -> None:
    from moto.moto_api import recorder

    record = recorder._record_request

    def record_changes(request, body=None):
        if _changes_state(request):
            record(request, body)

    recorder._record_request = record_changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.motoserver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--recording", type=Path, help="file of recorded requests (created 0600)")
    args = parser.parse_args(argv)

    if args.recording:
        from local.statefiles import touch_private

        touch_private(args.recording)
        os.environ["MOTO_RECORDER_FILEPATH"] = str(args.recording)
    import logging

    from moto.moto_api import recorder
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request drowns the stack's log
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    if args.recording:
        _filter_recorder()
        replayed = sum(1 for _ in args.recording.open())
        recorder.replay_recording(target_host=f"http://{args.host}:{args.port}")
        recorder.start_recording()
    else:
        replayed = 0
    print(json.dumps({"moto": f"http://{args.host}:{args.port}", "replayed": replayed}), flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
