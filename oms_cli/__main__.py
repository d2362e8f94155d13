import sys

from oms_cli.main import main

sys.exit(main())
