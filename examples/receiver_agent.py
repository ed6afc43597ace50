"""An agent that pauses for approval and resumes when the signed callback lands.

    python examples/receiver_agent.py --secret whsec_... [--port 8765]
        only receive: resume whatever run the callbacks name

    python examples/receiver_agent.py --secret whsec_... --api http://127.0.0.1:8000 --key cs_...
        also ask: create an invoice approval whose callback comes here, then wait for it

Standard library only, plus approvals/kit/receiver.py (copy that one file
into your agent). Every callback is verified (signature, timestamp) and acted
on once per webhook-id, so retries and replays are harmless.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from approvals.kit.receiver import InvalidCallback, MemoryStore, Receiver

finished = threading.Event()


def resume(event: dict) -> None:
    """What the paused run does next, by outcome."""
    request = event["data"]
    run = (request.get("requester") or {}).get("run_id", request["id"])
    kind = event["type"]
    if kind == "approval.escalated":
        print(f"[{run}] still waiting: escalated to {request['owner_role']}", flush=True)
        return
    decision = request["decision"]
    if kind == "approval.approved":
        payload = decision["payload"]
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if hashlib.sha256(canonical.encode()).hexdigest() != decision["payload_sha256"]:
            print(f"[{run}] REFUSING: the payload does not match what was approved", flush=True)
        else:
            print(f"[{run}] resumed: approved by {decision['by']}, executing {payload}", flush=True)
    elif kind == "approval.expired":
        ticket = request.get("ticket")
        print(
            f"[{run}] resumed: nobody decided in time; under manual review ({ticket})", flush=True
        )
    else:
        print(f"[{run}] resumed: {decision['outcome']} ({decision.get('reason')})", flush=True)
    finished.set()


def serve(receiver: Receiver, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                outcome = receiver.process(dict(self.headers), body, resume)
            except InvalidCallback as exc:
                print(f"rejected a callback: {exc}", flush=True)
                self.send_response(400)
            else:
                if outcome == "duplicate":
                    print("acknowledged a duplicate without acting again", flush=True)
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"listening for callbacks on http://127.0.0.1:{port}/callback", flush=True)
    return server


def ask(api: str, key: str, port: int) -> None:
    body = {
        "action": "invoice.discrepancy",
        "summary": "INV-1042 is $1,240 over PO-77",
        "context": {"amount": 1240.0, "currency": "USD", "vendor": "Acme"},
        "payload": {"invoice": "INV-1042", "pay": 1240.0},
        "callback_url": f"http://127.0.0.1:{port}/callback",
        "requester": {"run_id": "run_81"},
    }
    request = urllib.request.Request(
        f"{api.rstrip('/')}/api/v1/requests",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        created = json.load(response)
    print(f"[run_81] paused: waiting for {created['owner_role']} on {created['id']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secret", required=True, help="the agent's signing secret (whsec_...)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api", help="Countersign's base URL, to ask for an approval first")
    parser.add_argument("--key", help="the agent's API key (with --api)")
    args = parser.parse_args()
    server = serve(Receiver(args.secret, MemoryStore()), args.port)
    if args.api:
        ask(args.api, args.key, args.port)
    with contextlib.suppress(KeyboardInterrupt):
        finished.wait() if args.api else threading.Event().wait()
    server.shutdown()


if __name__ == "__main__":
    main()
