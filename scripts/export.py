"""Same as `trainer export`: takes the same options (--config, --set, ...)."""

import sys

from trainer.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
