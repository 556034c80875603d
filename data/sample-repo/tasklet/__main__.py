"""Allow ``python -m tasklet`` as an alias for the ``tasklet`` command."""

from tasklet.cli import main

raise SystemExit(main())
