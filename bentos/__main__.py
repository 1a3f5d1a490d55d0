import sys

from bentos.cli import main

sys.exit(main())
