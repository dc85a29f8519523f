"""``python -m knemu.cli``."""

from knemu.cli import main

raise SystemExit(main())
