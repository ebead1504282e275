"""`python -m imagestore …` is the `imagestore` command."""

import sys

try:
    from imagestore.cli import main
except KeyboardInterrupt:  # Ctrl-C before the command's own handling is in place
    sys.stderr.write("imagestore: cancelled\n")
    sys.exit(130)

sys.exit(main())
