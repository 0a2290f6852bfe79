"""``python -m chainfleet``: the same command line as ``chainfleet``, for an environment whose
scripts folder is not on ``PATH`` (or to be sure which interpreter runs it)."""

from chainfleet.cli import main

if __name__ == "__main__":
    main()
