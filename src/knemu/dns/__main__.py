"""``python -m knemu.dns``: run the cluster DNS (same flags as `knemu dns`)."""

from __future__ import annotations

import sys

from knemu.dns.flags import main

sys.exit(main())
