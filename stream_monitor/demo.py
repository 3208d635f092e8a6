"""`make demo`: the local end-to-end demonstration (grows with the service).

Until the monitor service lands this prints what the demo will do, against the
broker that ``make demo`` has already started.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args(argv)
    print(f"demo: a Kafka broker is ready at {args.bootstrap}.")
    print("demo: once the monitor service lands, this will create the topics, produce a")
    print("demo: simulated stream with a drift, run the monitor, print alerts as they")
    print("demo: arrive and serve metrics. Nothing more to show yet.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
