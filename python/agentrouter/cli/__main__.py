import sys

from agentrouter.cli import main

sys.exit(main())
