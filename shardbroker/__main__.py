"""``python -m shardbroker``: the same as the ``shardbroker`` command."""

import sys

from shardbroker.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
