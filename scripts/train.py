"""Same as `trainer train`: takes the same options (--config, --set, ...)."""

import sys

from trainer.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
