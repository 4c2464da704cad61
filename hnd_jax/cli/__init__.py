"""The ``hnd`` command line: thin argparse layers over the library API."""
