"""A `ShardedFleet` worker interpreter: `python -m infra.sandbox.fleet.worker FD`.

Its own module, so that running it does not import the module that defines it twice.
"""

from __future__ import annotations

import sys

from infra.sandbox.fleet.shard_worker import worker_main

if __name__ == "__main__":
    worker_main(sys.argv)
