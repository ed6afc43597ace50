"""A support agent that refunds an order only once a human approves it: the SDK's
decorator in plain Python. With the demo running (``bash .ci/demo``):

    export COUNTERSIGN_URL=http://127.0.0.1:8000
    export COUNTERSIGN_API_KEY=...          # "Demo agent API key" printed by the demo
    python examples/refund_agent.py --order 4711 --amount 42.50
    # ... approve (or deny) it in the inbox as sam or priya ...

Approved: the refund runs with the approved arguments. Denied, expired, or nobody
decided within --wait seconds: the agent logs why, tells the customer a person will
follow up, withdraws a request still open, and ends cleanly (exit code 0).
"""

from __future__ import annotations

import argparse
import logging

from countersign_sdk import (
    ApprovalCancelled,
    ApprovalDenied,
    ApprovalExpired,
    Countersign,
    WaitTimeout,
    requires_approval,
)

log = logging.getLogger("refund-agent")


def tell_customer(text: str) -> None:
    print(f"to customer: {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--order", required=True)
    parser.add_argument("--amount", type=float, required=True)
    parser.add_argument("--reason", default="item arrived damaged")
    parser.add_argument("--wait", type=float, default=900, help="seconds to wait for a decision")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll is noise

    cs = Countersign()  # COUNTERSIGN_URL and COUNTERSIGN_API_KEY

    @requires_approval(
        action="refund.issue",
        summary="Refund order #{order} (${amount:.2f}): {reason}",
        context=lambda order, amount, reason: {
            "order": order, "amount": amount, "currency": "USD", "reason": reason,
        },
        key=f"refund-agent:{args.order}",  # one request per order, across restarts
        client=cs,
        timeout=args.wait,
    )  # fmt: skip
    def issue_refund(order: str, amount: float, reason: str) -> None:
        # The real side effect goes here; it runs with what the reviewer approved.
        print(f"refund issued: order {order}, ${amount:.2f}", flush=True)
        tell_customer(f"Your refund of ${amount:.2f} is on its way.")

    log.info("asking for approval to refund order %s ($%.2f)", args.order, args.amount)
    try:
        issue_refund(args.order, args.amount, args.reason)
    except ApprovalDenied as denied:
        log.info("fallback: refund denied: %s", denied.reason)
        tell_customer("We could not refund this automatically; a colleague will contact you.")
    except ApprovalExpired as expired:
        log.info("fallback: nobody decided in time (ticket %s)", expired.ticket)
        tell_customer("Your request needs a manual review; a colleague will contact you.")
    except ApprovalCancelled:
        log.info("fallback: the request was withdrawn")
    except WaitTimeout as waiting:
        cs.requests.cancel(waiting.request_id, reason="the agent stopped waiting")
        log.info("fallback: no decision within %.0f s; request withdrawn", args.wait)
        tell_customer("This is taking longer than expected; a colleague will contact you.")
    finally:
        cs.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
