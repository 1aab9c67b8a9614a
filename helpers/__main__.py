"""Command line: ``python -m helpers pretrain | evaluate | bench``."""
from .cli import main

main()
