"""`python -m toolkit.core.bench [--build-only]`: build the roof probe and print the measured roof."""

import sys

from toolkit.core.bench.roof import main

main(sys.argv[1:])
