import sys

from tl_clt.cli import main

sys.exit(main())
