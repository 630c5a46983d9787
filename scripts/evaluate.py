"""Same as `trainer evaluate`: takes the same options (--config, --set, ...)."""

import sys

from trainer.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
