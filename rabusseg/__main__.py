"""``python -m rabusseg`` (and ``torchrun -m rabusseg train ...``)."""

from rabusseg.cli import main

if __name__ == "__main__":
    main()
