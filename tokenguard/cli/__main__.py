"""``python -m tokenguard.cli``: the same as the ``tokenguard`` command."""

from . import main

raise SystemExit(main())
