"""Sub-commands of the ``timetravel`` command line (see :mod:`timetravel.cli`)."""
