"""`python -m flowrl.testing AGENT [...]`: run the conformance suite on agents from the shell."""

from __future__ import annotations

import argparse
import json
import sys

from flowrl.testing.conformance import CHECK_NAMES, ConformanceError, check_agent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flowrl.testing", description="Agent conformance suite.")
    p.add_argument("agents", nargs="+", help="registered names (sac, myagent) or module:Class paths")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--check", action="append", choices=CHECK_NAMES, help="run only these checks (repeatable)")
    p.add_argument("--config", default=None, help="agent config overrides as JSON, e.g. '{\"hidden_dim\": 32}'")
    args = p.parse_args(argv)
    config = json.loads(args.config) if args.config else None
    failed = 0
    for agent in args.agents:
        print(f"== {agent}", flush=True)
        try:
            check_agent(agent, config, device=args.device, checks=args.check, verbose=True)
        except ConformanceError as exc:
            print(exc, file=sys.stderr)
            failed += 1
        except (ValueError, TypeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
