import sys

from rectified.cli import main

sys.exit(main())
