#!/usr/bin/env python
"""Write synthetic chest-CT phantoms (DICOM series + localizer, NIfTI, PNG slices) with exact lung masks.

Same as ``fusionlungnet phantom``; see ``--help``.
"""

import sys

from fusionlungnet_monai.cli import main

if __name__ == "__main__":
    sys.exit(main(["phantom", *sys.argv[1:]]))
