import sys

from study.advise.cli import main

sys.exit(main())
