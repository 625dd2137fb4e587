import sys

from kvconfig._cli import main

sys.exit(main())
