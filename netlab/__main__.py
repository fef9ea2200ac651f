"""``python -m netlab``: see ``netlab._cli``."""

from ._cli import main

raise SystemExit(main())
