"""`python -m imagestore …` is the `imagestore` command."""

import sys

from imagestore.cli import main

sys.exit(main())
