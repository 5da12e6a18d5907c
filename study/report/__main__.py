import sys

from study.report.build import main

sys.exit(main())
