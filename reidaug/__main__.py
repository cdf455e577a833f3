import sys

from reidaug.cli import main

sys.exit(main())
