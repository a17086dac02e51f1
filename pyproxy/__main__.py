"""`python -m pyproxy ...` is the `pyproxy` command."""
import sys

from .cli import main

sys.exit(main())
