import sys

from bench.runner.cli import main

sys.exit(main())
