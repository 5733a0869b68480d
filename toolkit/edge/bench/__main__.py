"""`python -m toolkit.edge.bench [--build-only]`: build the roof probe and print the measured roof."""

import sys

from toolkit.edge.bench.roof import main

main(sys.argv[1:])
