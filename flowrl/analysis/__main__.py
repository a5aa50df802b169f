import sys

from flowrl.analysis.cli import main

sys.exit(main())
