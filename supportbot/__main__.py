"""`python -m supportbot` runs the command line."""

import sys

from supportbot.cli import main

sys.exit(main())
